"""End to end: `proxy64 serve` as a subprocess (real dialer, relay, recorder), curl -x, and an
IPv4-only aiohttp origin on 127.0.0.1 reached by IPv4 literal through the embedded egress.

The IPv4 literal is embedded in the network-specific prefix 2001:db8:64::/96 (RFC 6052
§2.2) and, with --egress embedded, dialed as IPv4 again by proxy64 itself.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.helpers.aiohttp_origin import Origin, running_origin
from tests.helpers.curl import clean_env, curl_bytes
from tests.helpers.origins import pattern_bytes, serve_tcp_hash
from tests.helpers.proxy_process import ProxyProcess, proxy_process

EMBEDDED = ("--egress", "embedded", "--nat64-prefix", "2001:db8:64::/96", "--socks", "off")


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as running:
        yield running


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyProcess]:
    with proxy_process(*EMBEDDED, env=clean_env()) as running:
        yield running


def test_serve_forwards_get_and_binary_post(
    proxy: ProxyProcess, origin: Origin, tmp_path: Path
) -> None:
    got = curl_bytes("-x", proxy.http_url, origin.url4("/echo?x=1"))
    assert got.returncode == 0, got.stderr
    echo = json.loads(got.stdout)
    assert echo["peer"][0] == "127.0.0.1" and echo["path_qs"] == "/echo?x=1"
    assert ["Via", "1.1 proxy64"] in echo["headers"]
    body = secrets.token_bytes(2 * 1024 * 1024)
    (tmp_path / "b").write_bytes(body)
    posted = curl_bytes(
        "-x", proxy.http_url, "--data-binary", f"@{tmp_path / 'b'}", origin.url4("/echo")
    )
    assert json.loads(posted.stdout)["sha256"] == hashlib.sha256(body).hexdigest()


def test_serve_connect_tunnel(proxy: ProxyProcess, origin: Origin) -> None:
    tunnelled = curl_bytes("-p", "-x", proxy.http_url, "--data-binary", "abc", origin.url4("/echo"))
    assert tunnelled.returncode == 0, tunnelled.stderr
    assert json.loads(tunnelled.stdout)["sha256"] == hashlib.sha256(b"abc").hexdigest()
    # The real recorder logs one line per connection, with the embedded egress.
    deadline = time.monotonic() + 5
    while not [line for line in proxy.output().splitlines() if "http-connect" in line]:
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.05)
    (line,) = [line for line in proxy.output().splitlines() if "http-connect" in line]
    assert f"127.0.0.1:{origin.port4}" in line and "egress embedded" in line


def test_serve_refused_port_is_502_with_reason(proxy: ProxyProcess) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = curl_bytes("-x", proxy.http_url, "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/")
    body, _, code = refused.stdout.rpartition(b"\n")
    assert code == b"502"
    assert b"connection refused" in body


def test_serve_with_well_known_prefix_reaches_loopback_and_strict_refuses_403(
    origin: Origin,
) -> None:
    """Loopback is this host: reached directly under 64:ff9b::/96 too. --strict-wkp refuses
    what a strict NAT64 refuses (RFC 6052 §3.1) before any dial: 403 naming the option."""
    args = ("--egress", "embedded", "--nat64-prefix", "64:ff9b::/96", "--socks", "off")
    with proxy_process(*args, env=clean_env()) as wkp:
        reached = curl_bytes("-x", wkp.http_url, "-w", "\n%{http_code}", origin.url4("/echo"))
    assert reached.stdout.rpartition(b"\n")[2] == b"200", reached
    with proxy_process(*args, "--strict-wkp", env=clean_env()) as strict:
        refused = curl_bytes("-x", strict.http_url, "-w", "\n%{http_code}", "http://10.1.2.3/")
    body, _, code = refused.stdout.rpartition(b"\n")
    assert code == b"403", refused
    assert b"--strict-wkp" in body and b"RFC 6052" in body


def test_serve_auth_file_407_then_accepted(origin: Origin, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(10)
    auth = tmp_path / "auth"
    auth.write_text(f"tester:{password}\n")
    auth.chmod(0o600)
    conf = tmp_path / "curl.conf"  # curl reads the credentials from a file, not argv
    conf.write_text(f'proxy-user = "tester:{password}"\n')
    with proxy_process(*EMBEDDED, "--auth-file", str(auth), env=clean_env()) as authed:
        missing = curl_bytes("-x", authed.http_url, "-i", origin.url4("/echo"))
        accepted = curl_bytes("-K", str(conf), "-x", authed.http_url, origin.url4("/echo"))
    assert missing.stdout.startswith(b"HTTP/1.1 407 ")
    assert b'Proxy-Authenticate: Basic realm="proxy64"' in missing.stdout
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["method"] == "GET"


async def test_serve_connect_half_close_with_early_bytes_sha_both_ways(
    nursery: trio.Nursery, proxy: ProxyProcess
) -> None:
    """The real relay behind CONNECT: early bytes kept, half-close honoured, both ways."""
    download = 3 * 1024 * 1024
    port = await nursery.start(partial(serve_tcp_hash, "127.0.0.1", download))
    payload = secrets.token_bytes(2 * 1024 * 1024)
    assert proxy.http is not None
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream(*proxy.http)
        head = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        await stream.send_all(head + payload[:3000])
        await stream.send_all(payload[3000:])
        await stream.send_eof()
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
        await stream.aclose()
    answer = b"".join(chunks)
    response_head, _, rest = answer.partition(b"\r\n\r\n")
    assert response_head == b"HTTP/1.1 200 Connection Established"
    assert rest[:32] == hashlib.sha256(payload).digest()
    assert rest[32:] == pattern_bytes(download)
