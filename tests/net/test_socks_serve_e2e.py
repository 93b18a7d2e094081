"""End to end: `proxy64 serve` as a subprocess (real resolver, dialer, relay, recorder) with
SOCKS clients, against IPv4-only origins on 127.0.0.1 through the embedded egress.

127.0.0.1 is embedded in the network-specific prefix 2001:db8:64::/96 (RFC 6052 §2.2; the
well-known prefix must refuse it, §3.1) and dialed as IPv4 again by proxy64 itself. Names
come from a tiny loopback DNS server that answers A only, so every name is a DNS64
synthesis (RFC 6147 §5.1.6 path).
"""

from __future__ import annotations

import hashlib
import os
import socket
from ipaddress import IPv4Address
from pathlib import Path

import trio

from tests.helpers.curl import curl_async_text
from tests.helpers.origins import pattern_bytes, serve_http_hello, serve_tcp_hash, serve_udp_echo
from tests.helpers.proxy_process import proxy_process
from tests.helpers.serve_e2e import (
    CLEAN_ENV,
    NAME,
    serve_a_only_dns,
    serve_embedded,
    socks5,
    wait_log,
)
from tests.helpers.socks5_client import connect_request
from tests.helpers.streams import receive_exactly


async def test_serve_curl_socks5_literal_and_hostname(nursery: trio.Nursery) -> None:
    origin = await nursery.start(serve_http_hello)
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port, "--http", "off") as proxy:
        socks = f"{proxy.socks[0]}:{proxy.socks[1]}"  # type: ignore[index]
        code, out, err = await curl_async_text("--socks5", socks, f"http://127.0.0.1:{origin}/lit")
        assert (code, out) == (0, "hello /lit\n"), err
        code, out, err = await curl_async_text(
            "--socks5-hostname", socks, f"http://{NAME}:{origin}/name"
        )
        assert (code, out) == (0, "hello /name\n"), err
        code, out, err = await curl_async_text("--socks4a", socks, f"http://{NAME}:{origin}/four")
        assert (code, out) == (0, "hello /four\n"), err
        code, _, err = await curl_async_text(
            "--socks5-hostname", socks, f"http://nx.{NAME}:{origin}/"
        )
        assert code == 97, err
        await wait_log(proxy, "ipv4-literal-mapped", "dns64-synthesized", "embedded", "NXDOMAIN")


async def test_serve_sha256_both_ways_half_close(nursery: trio.Nursery) -> None:
    download = 3 * 1024 * 1024 + 1
    origin = await nursery.start(serve_tcp_hash, "127.0.0.1", download)
    dns_port = await nursery.start(serve_a_only_dns)
    upload = os.urandom(5 * 1024 * 1024 + 3)  # past the relay's splice threshold
    with serve_embedded(dns_port, "--http", "off") as proxy:
        with trio.fail_after(30):
            stream, reply = await socks5(proxy, connect_request(NAME, origin))
            assert reply[1] == 0
            async with stream:
                await stream.send_all(upload)
                await stream.send_eof()
                answer = bytearray()
                while chunk := await stream.receive_some(1 << 16):
                    answer += chunk
    assert bytes(answer[:32]) == hashlib.sha256(upload).digest()
    assert hashlib.sha256(answer[32:]).digest() == hashlib.sha256(pattern_bytes(download)).digest()


async def test_serve_replies_for_refused_and_well_known_prefix(nursery: trio.Nursery) -> None:
    dns_port = await nursery.start(serve_a_only_dns)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with serve_embedded(dns_port, "--http", "off") as proxy, trio.fail_after(15):
        _, reply = await socks5(proxy, connect_request("127.0.0.1", closed_port))
        assert reply[1] == 0x05  # connection refused
    with proxy_process(
        "--egress", "embedded", "--nat64-prefix", "64:ff9b::/96", "--http", "off",
        "--dns", f"127.0.0.1:{dns_port}", env=CLEAN_ENV,
    ) as wkp, trio.fail_after(15):  # fmt: skip
        _, reply = await socks5(wkp, connect_request("127.0.0.1", closed_port))
        assert reply[1] == 0x05  # the embedded egress carries every address: refused port
    with proxy_process(
        "--egress", "embedded", "--nat64-prefix", "64:ff9b::/96", "--http", "off",
        "--dns", f"127.0.0.1:{dns_port}", "--strict-wkp", env=CLEAN_ENV,
    ) as strict, trio.fail_after(15):  # fmt: skip
        _, reply = await socks5(strict, connect_request("10.1.2.3", 80))
        assert reply[1] == 0x02  # --strict-wkp: not allowed by ruleset, before any dial
        await wait_log(strict, "--strict-wkp", "RFC 6052 §3.1")


async def test_serve_auth_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await nursery.start(serve_http_hello)
    dns_port = await nursery.start(serve_a_only_dns)
    auth = tmp_path / "auth"
    auth.write_text("tester:pa55word\n")
    auth.chmod(0o600)
    with (
        serve_embedded(dns_port, "--http", "off", "--auth-file", str(auth)) as proxy,
        trio.fail_after(15),
    ):
        good = b"\x01\x06tester\x08pa55word"
        stream, reply = await socks5(
            proxy,
            connect_request("127.0.0.1", origin),
            greeting=b"\x05\x01\x02" + good,
            greeting_reply=b"\x05\x02\x01\x00",
        )
        assert reply[1] == 0
        await stream.aclose()
        assert proxy.socks is not None
        wrong = await trio.open_tcp_stream(*proxy.socks)
        await wrong.send_all(b"\x05\x01\x02\x01\x06tester\x05wrong")
        assert await receive_exactly(wrong, 4) == b"\x05\x02\x01\x01"
        four = await trio.open_tcp_stream(*proxy.socks)
        await four.send_all(b"\x04\x01" + origin.to_bytes(2, "big") + b"\x7f\x00\x00\x01t\x00")
        assert await receive_exactly(four, 8) == b"\x00\x5b" + bytes(6)
        await wrong.aclose()
        await four.aclose()
        log = await wait_log(proxy, "authentication failed for user 'tester'", "SOCKS4 has no")
    assert "pa55word" not in log and "wrong" not in log


async def test_serve_udp_associate_embedded(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_udp_echo, "127.0.0.1")
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port, "--http", "off") as proxy, trio.fail_after(15):
        control, reply = await socks5(proxy, b"\x05\x03\x00\x01" + bytes(6))
        assert reply[:4] == b"\x05\x00\x00\x01"
        relay = (str(IPv4Address(reply[4:8])), int.from_bytes(reply[8:10], "big"))
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            await client.bind(("127.0.0.1", 0))
            header = b"\x00\x00\x00\x03" + bytes([len(NAME)]) + NAME.encode()
            header += echo.to_bytes(2, "big")
            await client.sendto(header + b"via nat64", relay)
            data, _ = await client.recvfrom(65535)
            assert data == header + b"via nat64"
        await control.aclose()
