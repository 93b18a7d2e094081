"""The SOCKS handler over real loopback sockets, with a fake dialer that reaches loopback
origins: replies, records, bad input, slow and vanishing clients, capacity, integrity."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import pytest
import trio

from proxy64.destination import Destination, Reached
from proxy64.errors import (
    AddressMappingError,
    DialAttempt,
    DialCause,
    DialError,
    Proxy64Error,
    ResolutionError,
)
from proxy64.net.context import ProxyContext
from tests.helpers.fakes import FakeDialer, ListRecorder, make_context
from tests.helpers.origins import pattern_bytes, serve_tcp_echo, serve_tcp_hash
from tests.helpers.socks5_client import NO_AUTH_GREETING, connect_request, open_socks5
from tests.helpers.socks_fronts import serve_socks
from tests.helpers.streams import receive_all, receive_exactly

NAMES: dict[str, IPv4Address | IPv6Address] = {
    "origin.p64.test": IPv4Address("127.0.0.1"),
    "origin6.p64.test": IPv6Address("::1"),
}
NOAUTH = NO_AUTH_GREETING


@dataclass
class Proxy:
    port: int
    dialer: FakeDialer
    recorder: ListRecorder
    ctx: ProxyContext


async def start_proxy(nursery: trio.Nursery, **options: object) -> Proxy:
    dialer = FakeDialer(names=dict(NAMES))
    recorder = ListRecorder()
    ctx = make_context(dialer, recorder, **options)  # type: ignore[arg-type]
    port, ctx = await serve_socks(nursery, ctx)
    return Proxy(port, dialer, recorder, ctx)


async def assert_good_client_works(proxy: Proxy, echo_port: int) -> None:
    stream, reply = await open_socks5(
        ("127.0.0.1", proxy.port), connect_request("127.0.0.1", echo_port)
    )
    async with stream:
        assert reply[:2] == b"\x05\x00"
        await stream.send_all(b"still serving")
        assert await receive_exactly(stream, 13) == b"still serving"


# --- CONNECT ---------------------------------------------------------------------------


async def test_rfc1928_connect_ipv4_literal(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery)
    with trio.fail_after(5):
        stream, reply = await open_socks5(
            ("127.0.0.1", proxy.port), connect_request("127.0.0.1", echo)
        )
        async with stream:
            assert reply[:4] == b"\x05\x00\x00\x01"
            assert reply[4:8] == IPv4Address("127.0.0.1").packed  # BND.ADDR: outbound socket
            assert int.from_bytes(reply[8:10], "big") != 0
            await stream.send_all(b"ping")
            assert await receive_exactly(stream, 4) == b"ping"
        (record,) = await proxy.recorder.wait_for(1)
    assert record.front_end == "socks5"
    assert record.destination == Destination(IPv4Address("127.0.0.1"), echo)
    assert record.remote == (IPv4Address("127.0.0.1"), echo)
    assert record.reached is Reached.IPV4_LITERAL
    assert record.outcome == "ok"
    assert (record.bytes_up, record.bytes_down) == (4, 4)
    assert record.client.startswith("127.0.0.1:")


async def test_connect_by_name_reaches_ipv6_origin(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo, "::1")
    proxy = await start_proxy(nursery)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(NOAUTH + connect_request("Origin6.P64.test.", echo) + b"early")
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            reply = await receive_exactly(stream, 22)  # ATYP 4: BND.ADDR is ::1
            assert reply[:4] == b"\x05\x00\x00\x04"
            assert reply[4:20] == IPv6Address("::1").packed
            assert await receive_exactly(stream, 5) == b"early"  # sent with the request
        await proxy.recorder.wait_for(1)
    assert proxy.dialer.dialed == [Destination("origin6.p64.test", echo)]


async def test_integrity_sha256_both_ways_with_half_close(nursery: trio.Nursery) -> None:
    upload = os.urandom(3 * 1024 * 1024 + 7)
    download = 2 * 1024 * 1024 + 3
    origin = await nursery.start(serve_tcp_hash, "127.0.0.1", download)
    proxy = await start_proxy(nursery)
    with trio.fail_after(20):
        stream, reply = await open_socks5(
            ("127.0.0.1", proxy.port), connect_request("origin.p64.test", origin)
        )
        assert reply[1] == 0
        async with stream:
            await stream.send_all(upload)
            await stream.send_eof()  # half-close: we still receive the answer
            answer = await receive_all(stream)
        (record,) = await proxy.recorder.wait_for(1)
    assert answer[:32] == hashlib.sha256(upload).digest()
    assert hashlib.sha256(answer[32:]).digest() == hashlib.sha256(pattern_bytes(download)).digest()
    assert (record.bytes_up, record.bytes_down) == (len(upload), 32 + download)


async def test_integrity_echo_concurrent(nursery: trio.Nursery) -> None:
    data = os.urandom(2 * 1024 * 1024)
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery)
    received = bytearray()
    with trio.fail_after(20):
        stream, _ = await open_socks5(("127.0.0.1", proxy.port), connect_request("127.0.0.1", echo))
        async with stream:

            async def sender() -> None:
                for i in range(0, len(data), 100_000):
                    await stream.send_all(data[i : i + 100_000])
                await stream.send_eof()

            async with trio.open_nursery() as inner:
                inner.start_soon(sender)
                received += await receive_all(stream)
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


# --- Dial failures map to their own reply ----------------------------------------------


def _dial_error(cause: DialCause) -> Callable[[Destination], Proxy64Error]:
    return lambda d: DialError(str(d), [DialAttempt(IPv6Address("64:ff9b::1"), d.port, cause, "")])


FAILURES: list[tuple[str, Callable[[Destination], Proxy64Error], int, str]] = [
    ("nx.p64.test", lambda d: ResolutionError("nx.p64.test", "NXDOMAIN"), 0x04, "NXDOMAIN"),
    ("slowdns.p64.test", lambda d: ResolutionError("slowdns.p64.test", "TIMEOUT"), 0x06, "timeout"),
    (
        "map.p64.test",
        lambda d: AddressMappingError("64:ff9b::/96 cannot carry 10.1.2.3"),
        0x02,
        "10.1.2.3",
    ),
    ("refused.p64.test", _dial_error(DialCause.REFUSED), 0x05, "refused"),
    (
        "netunreach.p64.test",
        _dial_error(DialCause.NETWORK_UNREACHABLE),
        0x03,
        "network unreachable",
    ),
    ("hostunreach.p64.test", _dial_error(DialCause.HOST_UNREACHABLE), 0x04, "host unreachable"),
    ("timeout.p64.test", _dial_error(DialCause.TIMEOUT), 0x06, "timed out"),
]


@pytest.mark.parametrize(("name", "error", "code", "words"), FAILURES)
async def test_rfc1928_6_dial_errors_get_their_reply(
    nursery: trio.Nursery,
    name: str,
    error: Callable[[Destination], Proxy64Error],
    code: int,
    words: str,
) -> None:
    proxy = await start_proxy(nursery)
    proxy.dialer.failures[name] = error
    with trio.fail_after(5):
        stream, reply = await open_socks5(("127.0.0.1", proxy.port), connect_request(name, 443))
        async with stream:
            assert reply == bytes([5, code, 0, 1]) + bytes(6)
            assert await stream.receive_some(10) == b""  # then closed
        (record,) = await proxy.recorder.wait_for(1)
    assert words in record.outcome
    assert record.destination == Destination(name, 443)


async def test_unknown_name_and_closed_port(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery)
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    with trio.fail_after(5):
        _, reply = await open_socks5(
            ("127.0.0.1", proxy.port), connect_request("unknown.p64.test", 80)
        )
        assert reply[1] == 0x04
        _, reply = await open_socks5(
            ("127.0.0.1", proxy.port), connect_request("127.0.0.1", closed_port)
        )
        assert reply[1] == 0x05
        records = await proxy.recorder.wait_for(2)
    assert any("NXDOMAIN" in r.outcome for r in records)


# --- Bad input: its protocol's error or a clean close, and the server keeps serving ----

BAD_REQUESTS = [
    (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", 0x07),  # BIND
    (b"\x05\x07\x00\x01\x7f\x00\x00\x01\x00\x50", 0x07),  # unknown command
    (b"\x05\x01\x00\x07\x7f\x00\x00\x01\x00\x50", 0x08),  # unknown ATYP
    (b"\x05\x01\x00\x03\xff" + b"a" * 255 + b"\x00\x50", 0x01),  # over-long name
    (b"\x05\x01\x00\x03\x00\x00\x50", 0x01),  # empty name
]


@pytest.mark.parametrize(("request_bytes", "code"), BAD_REQUESTS)
async def test_bad_requests_over_a_real_socket(
    nursery: trio.Nursery, request_bytes: bytes, code: int
) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery)
    with trio.fail_after(5):
        stream, reply = await open_socks5(("127.0.0.1", proxy.port), request_bytes)
        async with stream:
            assert reply == bytes([5, code, 0, 1]) + bytes(6)
            assert await stream.receive_some(10) == b""
        await assert_good_client_works(proxy, echo)
        records = await proxy.recorder.wait_for(2)
    (bad,) = [r for r in records if r.outcome != "ok"]
    assert bad.outcome != "open"
    assert proxy.dialer.dialed == [Destination(IPv4Address("127.0.0.1"), echo)]


@pytest.mark.parametrize(
    ("garbage", "answer"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),  # not SOCKS: closed without a byte
        (b"\x16\x03\x01\x02\x00", b""),  # a TLS ClientHello
        (b"\x05\x00", b"\x05\xff"),  # NMETHODS 0
        (b"\x05\x05\x00", b"\x05\xff"),  # truncated greeting, then EOF
        (b"\x05\x01\x00\x05\x01\x00\x03\x10abc", b"\x05\x00\x05\x01\x00\x01" + bytes(6)),
        (b"\x04\x01\x00\x50\x7f\x00", b"\x00\x5b" + bytes(6)),  # truncated SOCKS4
    ],
)
async def test_garbage_and_truncated_input(
    nursery: trio.Nursery, garbage: bytes, answer: bytes
) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(garbage)
            await stream.send_eof()
            assert await receive_all(stream) == answer
        await assert_good_client_works(proxy, echo)
        records = await proxy.recorder.wait_for(2)
    (bad,) = [r for r in records if r.outcome != "ok"]
    assert bad.outcome != "open"
    assert len(bad.outcome) > 20  # a sentence, not a code


async def test_client_vanishing_mid_handshake(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery)
    with trio.fail_after(5):
        for partial_bytes in (b"", b"\x05", NOAUTH, NOAUTH + b"\x05\x01\x00\x03\x20abc"):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            await stream.send_all(partial_bytes)
            stream.socket.setsockopt(
                trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\1\0\0\0\0\0\0\0"
            )
            await stream.aclose()  # RST with linger 0: the rudest way to vanish
        await assert_good_client_works(proxy, echo)
        records = await proxy.recorder.wait_for(5)
    assert [r.outcome for r in records].count("ok") == 1
    assert all(r.outcome != "open" for r in records)


async def test_slowloris_gets_timeout_and_others_are_served(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery, handshake_timeout=0.5)
    with trio.fail_after(5):
        slow_greeting = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await slow_greeting.send_all(b"\x05")
        slow_request = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await slow_request.send_all(NOAUTH + b"\x05\x01")
        await assert_good_client_works(proxy, echo)  # served while the slow ones wait
        start = trio.current_time()
        assert await receive_all(slow_greeting) == b"\x05\xff"
        assert await receive_all(slow_request) == b"\x05\x00\x05\x06\x00\x01" + bytes(6)
        assert trio.current_time() - start < 2
        records = await proxy.recorder.wait_for(3)
    assert sum("not finished within 0.5 s" in r.outcome for r in records) == 2


async def test_max_connections_refused_with_general_failure(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery, max_connections=1)
    with trio.fail_after(5):
        first, reply = await open_socks5(
            ("127.0.0.1", proxy.port), connect_request("127.0.0.1", echo)
        )
        assert reply[1] == 0
        second, reply = await open_socks5(
            ("127.0.0.1", proxy.port), connect_request("127.0.0.1", echo)
        )
        assert reply == b"\x05\x01\x00\x01" + bytes(6)
        await second.aclose()
        await first.aclose()
        records = await proxy.recorder.wait_for(2)
        assert any("too many connections (--max-connections 1)" in r.outcome for r in records)
        await assert_good_client_works(proxy, echo)  # the slot came back


# --- Authentication (RFC 1929) ---------------------------------------------------------


async def test_rfc1929_username_password(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery, credentials={"alice": "s3cret"})
    with trio.fail_after(5):
        ok = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await ok.send_all(b"\x05\x02\x00\x02")
        assert await receive_exactly(ok, 2) == b"\x05\x02"
        await ok.send_all(b"\x01\x05alice\x06s3cret" + connect_request("127.0.0.1", echo))
        assert await receive_exactly(ok, 2) == b"\x01\x00"
        assert (await receive_exactly(ok, 10))[1] == 0
        await ok.aclose()

        wrong = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await wrong.send_all(b"\x05\x01\x02\x01\x05alice\x05wrong")
        assert await receive_all(wrong) == b"\x05\x02\x01\x01"

        no_auth = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await no_auth.send_all(NOAUTH)
        assert await receive_all(no_auth) == b"\x05\xff"

        socks4 = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await socks4.send_all(b"\x04\x01" + echo.to_bytes(2, "big") + b"\x7f\x00\x00\x01alice\x00")
        assert await receive_all(socks4) == b"\x00\x5b" + bytes(6)
        records = await proxy.recorder.wait_for(4)
    outcomes = sorted(r.outcome for r in records)
    assert any("authentication failed for user 'alice'" in o for o in outcomes)
    assert any("offered no-auth but not username/password" in o for o in outcomes)
    assert any("SOCKS4 has no password" in o for o in outcomes)
    assert all("wrong" not in o and "s3cret" not in o for o in outcomes)


# --- SOCKS4 / SOCKS4a on the same listener ---------------------------------------------


async def test_socks4_and_4a_on_the_same_port(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    proxy = await start_proxy(nursery)
    port = echo.to_bytes(2, "big")
    with trio.fail_after(5):
        for request in (
            b"\x04\x01" + port + b"\x7f\x00\x00\x01user\x00",
            b"\x04\x01" + port + b"\x00\x00\x00\x01user\x00origin.p64.test\x00",
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream:
                await stream.send_all(request + b"hi")
                reply = await receive_exactly(stream, 8)
                assert reply[:2] == b"\x00\x5a"
                assert await receive_exactly(stream, 2) == b"hi"
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(b"\x04\x01" + port + b"\x00\x00\x00\x01\x00nx.p64.test\x00")
            assert await receive_all(stream) == b"\x00\x5b" + bytes(6)
        records = await proxy.recorder.wait_for(3)
    assert [r.front_end for r in records] == ["socks4"] * 3
    by_host = {r.destination.host: r for r in records if r.destination is not None}
    assert by_host["origin.p64.test"].outcome == "ok"
    assert by_host[IPv4Address("127.0.0.1")].outcome == "ok"
    assert "NXDOMAIN" in by_host["nx.p64.test"].outcome


@pytest.mark.parametrize(
    "messages",
    [
        [NOAUTH, connect_request("origin.p64.test", 0)],  # port patched below
        [b"\x04\x01\x00\x00\x00\x00\x00\x01user\x00origin.p64.test\x00"],
    ],
    ids=["socks5", "socks4a"],
)
async def test_trickle_over_a_real_ipv6_socket(
    nursery: trio.Nursery, messages: list[bytes]
) -> None:
    """One byte per send, the handler on an IPv6 listener: no read is assumed a message."""
    echo = await nursery.start(serve_tcp_echo)
    dialer = FakeDialer(names=dict(NAMES))
    recorder = ListRecorder()
    port, _ = await serve_socks(nursery, make_context(dialer, recorder), "::1")
    last = messages[-1]
    if last[0] == 5:
        messages = [*messages[:-1], last[:-2] + echo.to_bytes(2, "big")]
    else:
        messages = [last[:2] + echo.to_bytes(2, "big") + last[4:]]
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("::1", port)
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        async with stream:
            for message in messages:
                for byte in message:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.002)
                if message == NOAUTH:
                    assert await receive_exactly(stream, 2) == b"\x05\x00"
            reply = await receive_exactly(stream, 10 if last[0] == 5 else 8)  # IPv4 BND
            assert reply[1] in (0x00, 0x5A)
            await stream.send_all(b"trickled")
            assert await receive_exactly(stream, 8) == b"trickled"
        (record,) = await recorder.wait_for(1)
    assert record.destination == Destination("origin.p64.test", echo)
    assert record.client.startswith("[::1]:")


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", 0x07),  # BIND, refused by the machine
        (b"\x05\x01\x00\x03\x0bnx.p64.test\x00\x50", 0x04),  # NXDOMAIN, refused after a dial
    ],
)
async def test_refusal_survives_early_data(
    nursery: trio.Nursery, request_bytes: bytes, code: int
) -> None:
    """An optimistic client sends data after its request without waiting: the refusal must
    still arrive (the handler drains before closing, so the close is no RST)."""
    proxy = await start_proxy(nursery)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(NOAUTH + request_bytes + os.urandom(48 * 1024))
            await trio.sleep(0.2)  # let the handler refuse and close while bytes are unread
            assert await receive_all(stream) == b"\x05\x00" + bytes([5, code, 0, 1]) + bytes(6)
