"""Loop and self-dial protection against a real `proxy64 serve` (subprocess): a request
that would connect proxy64 to one of its own listeners is refused at depth 1 (SOCKS 0x02,
HTTP 508 Loop Detected, RFC 5842 §7.2), by literal, by name, through the embedded egress,
at [::1], chained through SOCKS or CONNECT in one write, while another client keeps
working; and --max-client-connections holds one address to its share of the slots.
"""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
import trio

from tests.helpers.origins import serve_tcp_hash
from tests.helpers.proxy_process import ProxyProcess
from tests.helpers.serve_e2e import (
    NAME,
    PREFIX,
    serve_a_only_dns,
    serve_embedded,
    socks5,
    wait_log,
)
from tests.helpers.socks5_client import connect_request
from tests.helpers.streams import receive_exactly


def v6(address: str, port: int) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6, address)
    return b"\x05\x01\x00\x04" + packed + port.to_bytes(2, "big")


async def socks_reply(proxy: ProxyProcess, request: bytes) -> int:
    stream, reply = await socks5(proxy, request)
    await stream.aclose()
    return reply[1]


async def http_answer(proxy: ProxyProcess, head: str) -> bytes:
    assert proxy.http is not None
    stream = await trio.open_tcp_stream(*proxy.http)
    async with stream:
        await stream.send_all(head.encode())
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


async def test_socks5_dials_to_our_listeners_are_refused_0x02(nursery: trio.Nursery) -> None:
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(20):
        assert proxy.socks is not None and proxy.http is not None
        socks_port, http_port = proxy.socks[1], proxy.http[1]
        embedded = PREFIX.replace("::/96", "::7f00:1")  # 127.0.0.1 in the prefix
        for request in (
            connect_request("127.0.0.1", socks_port),  # by literal
            connect_request("127.0.0.1", http_port),  # the other listener
            connect_request(
                NAME, socks_port
            ),  # by name (A 127.0.0.1, synthesized, embedded egress)
            v6(embedded, socks_port),  # through the embedded egress
            b"\x05\x01\x00\x01" + bytes(4) + socks_port.to_bytes(2, "big"),  # 0.0.0.0
        ):
            assert await socks_reply(proxy, request) == 0x02, request
        await wait_log(proxy, "loop refused", "is proxy64's own listener")


async def test_http_dials_to_our_listeners_are_508(nursery: trio.Nursery) -> None:
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(20):
        assert proxy.socks is not None and proxy.http is not None
        socks_port, http_port = proxy.socks[1], proxy.http[1]
        for head in (
            f"CONNECT 127.0.0.1:{http_port} HTTP/1.1\r\nHost: x\r\n\r\n",
            f"CONNECT {NAME}:{socks_port} HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET http://127.0.0.1:{http_port}/ HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            answer = await http_answer(proxy, head)
            assert answer.startswith(b"HTTP/1.1 508 Loop Detected\r\n"), answer
            assert b"loop refused" in answer


async def test_ipv6_loopback_listener_refused_at_v6_literal(nursery: trio.Nursery) -> None:
    dns_port = await nursery.start(serve_a_only_dns)
    with (
        serve_embedded(dns_port, "--socks", "[::1]:0", "--http", "[::1]:0") as proxy,
        trio.fail_after(20),
    ):
        assert proxy.socks is not None and proxy.http is not None
        assert await socks_reply(proxy, v6("::1", proxy.socks[1])) == 0x02
        assert await socks_reply(proxy, v6("::", proxy.http[1])) == 0x02
        answer = await http_answer(
            proxy, f"CONNECT [::1]:{proxy.http[1]} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 508 "), answer


async def echo_hash_through(proxy: ProxyProcess, origin: int) -> None:
    """A full exchange through the proxy (the other client that must keep working)."""
    stream, reply = await socks5(proxy, connect_request("127.0.0.1", origin))
    assert reply[1] == 0
    upload = os.urandom(10_000)
    async with stream:
        await stream.send_all(upload)
        await stream.send_eof()
        answer = bytearray()
        while chunk := await stream.receive_some(65536):
            answer += chunk
    assert bytes(answer[:32]) == hashlib.sha256(upload).digest()


async def test_self_chain_in_one_write_stops_at_depth_1(nursery: trio.Nursery) -> None:
    """One write chains 200 SOCKS5 CONNECTs and 200 HTTP CONNECTs to proxy64's own ports:
    the first dial is refused, nothing deeper is ever read, other clients are served."""
    origin = await nursery.start(serve_tcp_hash, "127.0.0.1", 100)
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(30):
        assert proxy.socks is not None and proxy.http is not None
        socks_port, http_port = proxy.socks[1], proxy.http[1]
        level = b"\x05\x01\x00" + connect_request("127.0.0.1", socks_port)
        stream = await trio.open_tcp_stream(*proxy.socks)
        async with stream:
            await stream.send_all(level * 200)
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            reply = await receive_exactly(stream, 10)
            assert reply[1] == 0x02
            rest = b""
            with trio.move_on_after(2):
                while chunk := await stream.receive_some(65536):
                    rest += chunk
            assert rest == b""  # no second level was ever answered
        connect = f"CONNECT 127.0.0.1:{http_port} HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = await http_answer(proxy, connect * 200)
        assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 508 ")
        await echo_hash_through(proxy, origin)
        log = await wait_log(proxy, "loop refused")
        assert log.count("loop refused") == 2, log


async def open_idle_tunnel(proxy: ProxyProcess, origin: int, source: str) -> trio.SocketStream:
    assert proxy.socks is not None
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(proxy.socks)
    stream = trio.SocketStream(sock)
    await stream.send_all(b"\x05\x01\x00" + connect_request("127.0.0.1", origin))
    assert await receive_exactly(stream, 2) == b"\x05\x00"
    return stream


@pytest.mark.parametrize("budget", [3])
async def test_max_client_connections_holds_one_address_only(
    nursery: trio.Nursery, budget: int
) -> None:
    origin = await nursery.start(serve_tcp_hash, "127.0.0.1", 100)
    dns_port = await nursery.start(serve_a_only_dns)
    with (
        serve_embedded(dns_port, "--max-client-connections", str(budget)) as proxy,
        trio.fail_after(30),
    ):
        held = [await open_idle_tunnel(proxy, origin, "127.0.0.1") for _ in range(budget)]
        for stream in held:
            assert (await receive_exactly(stream, 10))[1] == 0x00
        over = await open_idle_tunnel(proxy, origin, "127.0.0.1")
        assert (await receive_exactly(over, 10))[1] == 0x01
        other = await open_idle_tunnel(proxy, origin, "127.0.0.2")  # another address
        assert (await receive_exactly(other, 10))[1] == 0x00
        await wait_log(
            proxy, f"too many connections from 127.0.0.1 (--max-client-connections {budget})"
        )
        for stream in (*held, over, other):
            await stream.aclose()
