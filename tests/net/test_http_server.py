"""The HTTP proxy through the one executor, with real clients (curl, aiohttp, raw sockets)
and a real aiohttp origin.

The proxy runs in the test's trio nursery on 127.0.0.1; it dials through FakeDialer
(real TCP, loopback only). Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination, Reached
from proxy64.errors import AddressMappingError, DialAttempt, DialCause, DialError, ResolutionError
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed
from tests.helpers.aiohttp_origin import Origin, pattern_bytes, running_origin
from tests.helpers.curl import clean_env, curl_async
from tests.helpers.fakes import FakeDialer, ListRecorder
from tests.helpers.fakes import make_context as fakes_context
from tests.helpers.http_proxy import loopback_pair, serve_http, serve_socket
from tests.helpers.streams import closed_port, receive_head

MB = 1024 * 1024


def make_context(
    dialer: FakeDialer | None = None,
    *,
    credentials: dict[str, str] | None = None,
    handshake_timeout: float = 5.0,
    idle_timeout: float = 10.0,
    max_connections: int = 64,
) -> tuple[ProxyContext, ListRecorder]:
    recorder = ListRecorder()
    ctx = fakes_context(
        dialer or FakeDialer(),
        recorder,
        credentials=credentials,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
    )
    return dataclasses.replace(ctx, idle_timeout=idle_timeout), recorder


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as running:
        yield running


def failing_dialer() -> FakeDialer:
    def timeout(d: Destination) -> DialError:
        attempt = DialAttempt(IPv4Address("127.0.0.9"), d.port, DialCause.TIMEOUT, "timed out")
        return DialError(str(d), [attempt])

    return FakeDialer(
        names={"localhost": IPv4Address("127.0.0.1")},
        failures={
            "nxdomain.test": lambda d: ResolutionError(str(d.host), "NXDOMAIN"),
            "slow.test": timeout,
            "mapped.test": lambda d: AddressMappingError(
                "64:ff9b::/96 cannot carry 10.1.2.3 (RFC 6052 §3.1)"
            ),
        },
    )


async def start_proxy(nursery: trio.Nursery, ctx: ProxyContext) -> int:
    return await serve_http(nursery, ctx)


def socket_pair() -> tuple[trio.SocketStream, Any]:
    """A connected pair: the client's end as a stream, the proxy's as an accepted socket."""
    ours, theirs = loopback_pair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


def echo_of(result: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def records_of(recorder: ListRecorder, count: int) -> list[ConnectionRecord]:
    """The finished records, once `count` are in: a tunnel finishes after the client left."""
    with trio.fail_after(5):
        await recorder.wait_for(count)
    await trio.sleep(0.05)  # and no more than that arrive
    assert len(recorder.records) == count, recorder.records
    return recorder.records


def header_names(echo: dict[str, object]) -> list[str]:
    headers = echo["headers"]
    assert isinstance(headers, list)
    return [str(k).lower() for k, _ in headers]


def header_values(echo: dict[str, object]) -> dict[str, str]:
    """The echoed request's headers by name as sent (a repeated one: its last value)."""
    headers = echo["headers"]
    assert isinstance(headers, list)
    return {str(k): str(v) for k, v in headers}


# --- forwarding absolute-form http:// with curl -x ---------------------------------------


async def test_curl_get_ipv4_and_ipv6_origins(nursery: trio.Nursery, origin: Origin) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    proxy = f"http://127.0.0.1:{port}"
    for url, family in ((origin.url4("/echo?a=1"), "127.0.0.1"), (origin.url6("/echo"), "::1")):
        echo = echo_of(await curl_async("-x", proxy, "-H", "Proxy-Connection: keep-alive", url))
        assert echo["method"] == "GET"
        assert echo["peer"][0] == family  # type: ignore[index]
        names = header_names(echo)
        assert "via" in names and "proxy-connection" not in names
        assert header_values(echo)["Via"] == "1.1 proxy64"
    assert echo["path_qs"] == "/echo"
    assert [r.front_end for r in recorder.records] == ["http", "http"]
    assert all(r.outcome == "ok" and r.bytes_up > 0 and r.bytes_down > 0 for r in recorder.records)


async def test_curl_head_204_304(nursery: trio.Nursery, origin: Origin) -> None:
    ctx, _ = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    head = await curl_async("-x", proxy, "-I", origin.url4("/bytes/12345"))
    assert head.returncode == 0, head.stderr
    assert head.stdout.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 12345" in head.stdout
    for code in ("204", "304"):
        result = await curl_async(
            "-x",
            proxy,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            origin.url4(f"/status/{code}"),
        )
        assert result.stdout.decode() == f"{code} 0", result.stderr


@pytest.mark.parametrize("how", ["post", "put", "chunked"])
async def test_curl_uploads_random_binary_bodies(
    nursery: trio.Nursery, origin: Origin, tmp_path: Path, how: str
) -> None:
    ctx, recorder = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    body = secrets.token_bytes(3 * MB + 17)
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    args = {
        "post": ["--data-binary", f"@{path}"],
        "put": ["-T", str(path)],
        "chunked": ["-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}"],
    }[how]
    echo = echo_of(await curl_async("-x", proxy, *args, origin.url4("/echo")))
    assert echo["sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["length"] == len(body)
    assert echo["method"] == ("PUT" if how == "put" else "POST")
    if how == "chunked":
        assert ["Transfer-Encoding", "chunked"] in echo["headers"]  # type: ignore[operator]
    assert "expect" not in header_names(echo)  # proxy64 answered 100-continue itself
    assert recorder.records[0].bytes_up > len(body)


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
async def test_big_responses_streamed_intact(
    nursery: trio.Nursery, origin: Origin, kind: str
) -> None:
    ctx, _ = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    size = 8 * MB + 3
    result = await curl_async("-x", proxy, origin.url6(f"/{kind}/{size}?seed=5"))
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(pattern_bytes(size, 5)).digest()


async def test_keep_alive_reuses_one_upstream_and_replaces_it_on_host_change(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, recorder = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    before = origin.connection_count()
    result = await curl_async(
        "-x",
        proxy,
        "-w",
        " connects=%{num_connects}\n",
        origin.url4("/echo/1"),
        origin.url4("/echo/2"),
        origin.url6("/echo/3"),
    )
    assert result.returncode == 0, result.stderr
    # curl kept one client connection for all three (num_connects 1, 0, 0) ...
    assert [line.rsplit(b"=", 1)[1] for line in result.stdout.splitlines()] == [b"1", b"0", b"0"]
    # ... and the origin saw two upstream connections: one for 127.0.0.1, one for ::1.
    assert origin.connection_count() - before == 2
    assert [(r.front_end, str(r.destination)) for r in recorder.records] == [
        ("http", f"127.0.0.1:{origin.port4}"),
        ("http", f"[::1]:{origin.port6}"),
    ]


# --- CONNECT --------------------------------------------------------------------------------


async def test_curl_proxytunnel_connect_via_env(nursery: trio.Nursery, origin: Origin) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    env = clean_env(http_proxy=f"http://127.0.0.1:{port}")
    echo = echo_of(
        await curl_async("-p", "--data-binary", "tunnelled", origin.url4("/echo"), env=env)
    )
    assert echo["sha256"] == hashlib.sha256(b"tunnelled").hexdigest()
    assert "via" not in header_names(echo)  # a tunnel carries bytes, it does not rewrite
    (record,) = await records_of(recorder, 1)
    assert record.front_end == "http-connect" and record.outcome == "ok"
    assert record.destination == Destination(IPv4Address("127.0.0.1"), origin.port4)
    assert record.remote == (IPv4Address("127.0.0.1"), origin.port4)
    assert record.reached is Reached.IPV4_LITERAL
    assert record.bytes_up > 0 and record.bytes_down > 0


async def test_https_proxy_env_uses_connect(nursery: trio.Nursery, origin: Origin) -> None:
    # HTTPS_PROXY makes curl CONNECT for https:// URLs; a TLS-less target cannot be fetched
    # with https://, so this checks the tunnel opens (curl's own TLS then fails on plain
    # HTTP) and the proxy recorded the CONNECT to the right place.
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    env = clean_env(HTTPS_PROXY=f"http://127.0.0.1:{port}")
    result = await curl_async("-v", f"https://127.0.0.1:{origin.port4}/echo", env=env)
    assert b"CONNECT tunnel established, response 200" in result.stderr
    assert result.returncode != 0  # TLS handshake against a plain-HTTP origin
    (record,) = await records_of(recorder, 1)
    assert record.front_end == "http-connect"
    assert record.destination == Destination(IPv4Address("127.0.0.1"), origin.port4)


async def sha_then_reply_server(stream: trio.SocketStream) -> None:
    """Read to EOF, answer sha256 of what came, then 2 MB of pattern bytes, then close."""
    digest = hashlib.sha256()
    while data := await stream.receive_some(65536):
        digest.update(data)
    await stream.send_all(digest.hexdigest().encode() + b"\n" + pattern_bytes(2 * MB, 9))
    await stream.aclose()


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    while data := await stream.receive_some(65536):
        chunks.append(data)
    return b"".join(chunks)


async def test_connect_half_close_and_early_bytes_sha_both_ways(nursery: trio.Nursery) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    target = await nursery.start(partial(trio.serve_tcp, sha_then_reply_server, 0, host="::1"))
    target_port = target[0].socket.getsockname()[1]
    payload = secrets.token_bytes(3 * MB)
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        head = f"CONNECT [::1]:{target_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        await stream.send_all(head + payload[:5000])  # early bytes ride with the head
        await stream.send_all(payload[5000:])
        await stream.send_eof()  # half-close: we still expect the whole answer
        answer = await read_all(stream)
        await stream.aclose()
    response_head, _, rest = answer.partition(b"\r\n\r\n")
    assert response_head == b"HTTP/1.1 200 Connection Established"
    digest, _, reply = rest.partition(b"\n")
    assert digest.decode() == hashlib.sha256(payload).hexdigest()
    assert hashlib.sha256(reply).digest() == hashlib.sha256(pattern_bytes(2 * MB, 9)).digest()
    (record,) = await records_of(recorder, 1)
    assert record.bytes_up == len(payload) and record.bytes_down == len(rest)


# --- aiohttp client with trust_env ---------------------------------------------------------


def aiohttp_fetch(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    import aiohttp

    async def main() -> tuple[int, dict[str, object]]:
        async with (
            aiohttp.ClientSession(trust_env=True) as session,
            session.post(url, data=body) as response,
        ):
            return response.status, await response.json()

    return asyncio.run(main())


async def test_aiohttp_trust_env_http_proxy(
    nursery: trio.Nursery, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    for name in list(os.environ):
        if "proxy" in name.lower():
            monkeypatch.delenv(name)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    body = secrets.token_bytes(MB)
    with trio.fail_after(20):
        status, echo = await trio.to_thread.run_sync(aiohttp_fetch, origin.url4("/echo"), body)
    assert status == 200
    assert echo["sha256"] == hashlib.sha256(body).hexdigest()
    assert [r.front_end for r in recorder.records] == ["http"]


# --- errors from dialing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status", "said"),
    [
        ("nxdomain.test", 502, "DNS NXDOMAIN"),
        ("slow.test", 504, "timed out"),
        ("mapped.test", 403, "RFC 6052"),
        ("REFUSED", 502, "connection refused"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "CONNECT"])
async def test_dial_errors_become_their_status(
    nursery: trio.Nursery, host: str, status: int, said: str, method: str
) -> None:
    ctx, recorder = make_context(failing_dialer())
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    if host == "REFUSED":
        host = f"127.0.0.1:{closed_port()}"
    if method == "GET":
        result = await curl_async("-x", proxy, "-w", "\n%{http_code}", f"http://{host}/x")
        body, _, code = result.stdout.rpartition(b"\n")
        assert int(code) == status
        assert said in body.decode()
    else:
        result = await curl_async("-p", "-x", proxy, f"http://{host}/x")
        assert f"CONNECT tunnel failed, response {status}" in result.stderr.decode()
    (record,) = await records_of(recorder, 1)
    assert said in record.outcome
    assert record.front_end == ("http" if method == "GET" else "http-connect")


async def test_upstream_dropping_before_answer_is_502_and_mid_body_closes(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, recorder = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    dropped = await curl_async("-x", proxy, "-w", "\n%{http_code}", origin.url4("/drop"))
    assert dropped.stdout.endswith(b"\n502"), dropped.stdout
    assert b"closed the connection before answering" in dropped.stdout
    cut = await curl_async("-x", proxy, "-o", "/dev/null", origin.url4("/cut/200000"))
    # CURLE_RECV_ERROR: the cut response ends in a reset, never in a fake success
    assert cut.returncode == 56, cut.stderr
    assert b"reset" in cut.stderr.lower(), cut.stderr
    assert len(recorder.records) == 2
    assert all(r.outcome != "ok" for r in recorder.records)


# --- bad input from the client --------------------------------------------------------------


async def raw_exchange(port: int, data: bytes, *, eof: bool = True) -> bytes:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(data)
            if eof:
                await stream.send_eof()
            return await read_all(stream)
        finally:
            await stream.aclose()


def status_of(answer: bytes) -> int:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.receive_data(answer)
    event = client.next_event()
    assert isinstance(event, h11.Response), answer[:200]
    return event.status_code


async def assert_still_serving(port: int, origin: Origin) -> None:
    answer = await raw_exchange(
        port,
        f"GET {origin.url4('/status/204')} HTTP/1.1\r\nHost: a\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status_of(answer) == 204


@pytest.mark.parametrize(
    ("data", "status", "said"),
    [
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * (70 * 1024), 431, b"larger than"),
        (
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 9000 + b"\r\n",
            431,
            b"larger than",
        ),
        (b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"send the full URL"),
        (b"GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"CONNECT host:443"),
        (b"GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"not valid HTTP"),
        (b"GET http://[zz]/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"not an IPv6 address"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400, b"not valid HTTP"),
        (b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"host:port"),
        (
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            b"Only Transfer-Encoding: chunked",
        ),
    ],
)
async def test_bad_requests_get_their_status_and_server_keeps_serving(
    nursery: trio.Nursery, origin: Origin, data: bytes, status: int, said: bytes
) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    answer = await raw_exchange(port, data)
    assert status_of(answer) == status
    assert said in answer
    assert b"\r\nConnection: close\r\n" in answer
    # The refusal is the connection's one log line, with no destination (so no report row).
    [refused] = recorder.records
    assert refused.destination is None and refused.outcome != "ok"
    assert "bytearray(" not in refused.outcome and "b'" not in refused.outcome
    await assert_still_serving(port, origin)


async def test_client_vanishing_mid_head_and_slowloris(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, _ = make_context(handshake_timeout=0.5)
    port = await start_proxy(nursery, ctx)
    # Vanishes mid-head: no answer, a clean close.
    assert await raw_exchange(port, b"GET http://a/ HTTP/1.1\r\nHo") == b""
    # Sends part of a head then stalls: 408 after the handshake timeout.
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET http://a/ HTTP/1.1\r\n")
        answer = await read_all(stream)
        await stream.aclose()
    assert status_of(answer) == 408
    # Connects and says nothing: closed after the timeout without an answer.
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert await read_all(stream) == b""
        await stream.aclose()
    await assert_still_serving(port, origin)


async def test_too_many_connections_503(nursery: trio.Nursery, origin: Origin) -> None:
    ctx, _ = make_context(max_connections=1)
    port = await start_proxy(nursery, ctx)
    with trio.fail_after(10):
        holder = await trio.open_tcp_stream("127.0.0.1", port)
        await holder.send_all(b"GET http://a/ HTTP/1.1\r\n")  # holds the only slot
        while ctx.connection_slots.borrowed_tokens < 1:  # noqa: ASYNC110 (no event to wait on)
            await trio.sleep(0.01)
        answer = await raw_exchange(port, b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", eof=False)
        assert status_of(answer) == 503 and b"too many connections" in answer
        await holder.aclose()
        while ctx.connection_slots.borrowed_tokens > 0:  # noqa: ASYNC110 (slot given back)
            await trio.sleep(0.01)
    await assert_still_serving(port, origin)


# --- proxy authentication (407) ------------------------------------------------------------


async def test_407_flow_with_curl_proxy_user_from_file(
    nursery: trio.Nursery, origin: Origin, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    ctx, recorder = make_context(credentials={"user1": password})
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    missing = await curl_async("-x", proxy, "-i", origin.url4("/echo"))
    assert missing.stdout.startswith(b"HTTP/1.1 407 Proxy Authentication Required")
    assert b'Proxy-Authenticate: Basic realm="proxy64"' in missing.stdout
    config = tmp_path / "curl.conf"  # credentials in a file, never on the command line
    config.write_text('proxy-user = "user1:wrong"\n')
    wrong = await curl_async(
        "-K",
        str(config),
        "-x",
        proxy,
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        origin.url4("/echo"),
    )
    assert wrong.stdout == b"407"
    config.write_text(f'proxy-user = "user1:{password}"\n')
    echo = echo_of(await curl_async("-K", str(config), "-x", proxy, origin.url4("/echo")))
    assert "proxy-authorization" not in header_names(echo)  # never leaks to the origin
    tunnel = echo_of(await curl_async("-K", str(config), "-p", "-x", proxy, origin.url4("/echo")))
    assert tunnel["method"] == "GET"
    records = await records_of(recorder, 4)
    refusals = [r for r in records if r.destination is None]
    assert len(refusals) == 2 and all("password" in r.outcome for r in refusals)
    assert [r.front_end for r in records if r.destination is not None] == ["http", "http-connect"]


# --- keep-alive details ---------------------------------------------------------------------


async def one_shot_origin(stream: trio.SocketStream, served: list[int]) -> None:
    """Answers one request per connection with a kept-alive 200, then closes after 0.1 s
    without saying Connection: close, as an origin whose keep-alive timer ran out."""
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.ConnectionClosed):
                return
        served.append(len(served) + 1)
        body = f"answer {len(served)}".encode()
        headers = [("Content-Length", str(len(body)))]
        await stream.send_all(
            conn.send(h11.Response(status_code=200, headers=headers))
            + conn.send(h11.Data(data=body))
            + conn.send(h11.EndOfMessage())
        )
        await trio.sleep(0.1)


async def h11_request(
    stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, body: bytes = b""
) -> tuple[int, bytes]:
    """One request/response on a kept-alive client connection through the proxy."""
    data = conn.send(request)
    if body:
        data += conn.send(h11.Data(data=body))
    await stream.send_all(data + conn.send(h11.EndOfMessage()))
    status, chunks = 0, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            return status, b"".join(chunks)
        else:
            raise AssertionError(f"unexpected {event!r}")


@pytest.mark.parametrize(
    ("method", "body", "second_status"), [("GET", b"", 200), ("POST", b"data", 502)]
)
async def test_stale_upstream_retried_only_for_idempotent_requests(
    nursery: trio.Nursery, method: str, body: bytes, second_status: int
) -> None:
    served: list[int] = []
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    origin_listeners = await nursery.start(
        partial(trio.serve_tcp, partial(one_shot_origin, served=served), 0, host="127.0.0.1")
    )
    url = f"http://127.0.0.1:{origin_listeners[0].socket.getsockname()[1]}/"
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", "x"), ("Content-Length", str(len(body)))]
        first = await h11_request(
            stream, conn, h11.Request(method=method, target=url, headers=headers), body
        )
        assert first == (200, b"answer 1")
        await trio.sleep(0.3)  # the origin has closed the kept-alive upstream meanwhile
        status, answer = await h11_request(
            stream, conn, h11.Request(method=method, target=url, headers=headers), body
        )
        await stream.aclose()
    assert status == second_status
    if second_status == 200:
        assert answer == b"answer 2"  # served on a second upstream connection
        records = await records_of(recorder, 2)
        assert [r.outcome for r in records] == ["ok", "ok"]
    else:
        assert b"closed the connection" in answer
        assert served == [1]


async def test_idle_client_connection_closed_after_keepalive_timeout(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, recorder = make_context(idle_timeout=0.3)
    port = await start_proxy(nursery, ctx)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=origin.url4("/echo"), headers=[("Host", "x")])
        status, _ = await h11_request(stream, conn, request)
        assert status == 200
        started = trio.current_time()
        assert await read_all(stream) == b""  # the proxy closes the idle connection
        assert trio.current_time() - started >= 0.25
        await stream.aclose()
    (record,) = await records_of(recorder, 1)  # the upstream closed with the client
    assert record.outcome == "ok"


# --- more framing cases ---------------------------------------------------------------------


async def test_http10_client_gets_close_delimited_body(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, _ = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    size = 300_000
    result = await curl_async("-0", "-i", "-x", proxy, origin.url4(f"/chunked/{size}?seed=2"))
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()  # an HTTP/1.0 client cannot de-chunk
    assert b"\r\nVia: 1.1 proxy64" in head
    assert body == pattern_bytes(size, 2)


async def test_pipelined_requests_answered_in_order(nursery: trio.Nursery, origin: Origin) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    heads = b"".join(
        f"GET {origin.url4(f'/echo/{n}')} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
        for n, extra in ((1, ""), (2, ""), (3, "Connection: close\r\n"))
    )
    answer = await raw_exchange(port, heads, eof=False)
    client = h11.Connection(h11.CLIENT)
    paths: list[str] = []
    for _ in range(3):
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        if not paths:
            client.receive_data(answer)
        body = b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
        paths.append(json.loads(body)["path_qs"])
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    assert paths == ["/echo/1", "/echo/2", "/echo/3"]
    (record,) = await records_of(recorder, 1)  # one upstream connection for all three
    assert record.outcome == "ok"


async def test_request_head_trickled_one_byte_at_a_time(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, _ = make_context()
    port = await start_proxy(nursery, ctx)
    raw = f"GET {origin.url4('/status/204')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for byte in raw.encode():
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.001)
        answer = await read_all(stream)
        await stream.aclose()
    assert status_of(answer) == 204


# --- production timeouts on a virtual clock ----------------------------------------------------


async def test_default_handshake_timeout_virtual_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from proxy64.defaults import HANDSHAKE_TIMEOUT, IDLE_TIMEOUT

    ctx, _ = make_context(handshake_timeout=HANDSHAKE_TIMEOUT, idle_timeout=IDLE_TIMEOUT)
    # A partial head then silence: 408 exactly when the handshake timeout runs out.
    client, theirs = socket_pair()
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(serve_socket, ctx, theirs)
        await client.send_all(b"GET http://a/ HTTP/1.1\r\n")
        answer = await read_all(client)
        assert status_of(answer) == 408
        assert HANDSHAKE_TIMEOUT <= trio.current_time() - started < HANDSHAKE_TIMEOUT + 1
    # Nothing at all: closed without an answer after the same time.
    client, theirs = socket_pair()
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(serve_socket, ctx, theirs)
        assert await read_all(client) == b""
        assert HANDSHAKE_TIMEOUT <= trio.current_time() - started < HANDSHAKE_TIMEOUT + 1


async def test_max_forwards_options_answered_locally_trace_forwarded(
    nursery: trio.Nursery, origin: Origin
) -> None:
    ctx, recorder = make_context()
    port = await start_proxy(nursery, ctx)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", "x"), ("Max-Forwards", "0")]
        status, body = await h11_request(
            stream,
            conn,
            h11.Request(method="OPTIONS", target=origin.url4("/echo"), headers=headers),
        )
        assert (status, body) == (200, b"")
        assert recorder.records == [] and ctx.dialer.dialed == []  # type: ignore[attr-defined]
        # Same client connection: TRACE with Max-Forwards 1 reaches the origin with 0.
        headers = [("Host", "x"), ("Max-Forwards", "1")]
        status, body = await h11_request(
            stream, conn, h11.Request(method="TRACE", target=origin.url4("/echo"), headers=headers)
        )
        await stream.aclose()
    assert status == 200
    echo = json.loads(body)
    assert echo["method"] == "TRACE"
    assert ["Max-Forwards", "0"] in echo["headers"]


async def http10_origin(stream: trio.SocketStream, body: bytes) -> None:
    """An HTTP/1.0 origin: no Content-Length, the body ends when the connection closes."""
    async with stream:
        await receive_head(stream)
        await stream.send_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        await stream.send_all(body)


async def test_close_delimited_origin_body_rechunked_for_client(nursery: trio.Nursery) -> None:
    body = secrets.token_bytes(500_000)
    ctx, recorder = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(http10_origin, body=body), 0, host="127.0.0.1")
    )
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/old"
    result = await curl_async("-x", proxy, "-D", "-", url, url)  # twice: a new upstream each time
    assert result.returncode == 0, result.stderr
    answers = result.stdout.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 2
    for answer in answers:
        head, _, received = answer.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head and b"Via: 1.0 proxy64" in head
        assert received == body
    records = await records_of(recorder, 2)
    assert all(r.outcome == "ok" and r.bytes_down > len(body) for r in records)


# --- fuzz: the whole proxy over a socket pair --------------------------------------------------


class RefusingDialer(FakeDialer):
    """Every dial is refused, so fuzzed requests never reach a real socket."""

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        self.dialed.append(destination)
        attempt = DialAttempt(IPv4Address("127.0.0.1"), destination.port, DialCause.REFUSED, "")
        raise DialError(str(destination), [attempt])


FUZZ_PIECES = st.sampled_from(
    [
        b"GET ",
        b"CONNECT ",
        b"POST ",
        b"OPTIONS ",
        b"http://",
        b"https://",
        b"a.test",
        b"[::1]",
        b":80",
        b":0",
        b"/",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: a\r\n",
        b"\r\n",
        b"Content-Length: 4\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Max-Forwards: 0\r\n",
        b"Proxy-Authorization: Basic dTpw\r\n",
        b"4\r\nbody\r\n0\r\n\r\n",
        b"body",
        b"\x00\xff",
    ]
)
DECLARED = {100, 200, 400, 407, 408, 431, 501, 502}


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.lists(FUZZ_PIECES, max_size=25).map(b"".join), st.binary(max_size=200)),
    st.booleans(),
)
@example(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n", False)
@example(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\n\r\nearly", False)
@example(
    b"POST http://a.test/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody", False
)
@example(b"OPTIONS http://a.test/ HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n", False)
@example(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n", True)
async def test_fuzz_handler_answers_only_declared_statuses(data: bytes, auth: bool) -> None:
    recorder = ListRecorder()
    ctx = fakes_context(RefusingDialer(), recorder, credentials={"u": "p"} if auth else None)
    client, theirs = socket_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_socket, ctx, theirs)
            await client.send_all(data)
            await client.send_eof()
            answer = await read_all(client)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(answer)
    conn.receive_data(b"")
    while answer:
        event = conn.next_event()
        if isinstance(event, h11.InformationalResponse | h11.Response):
            assert event.status_code in DECLARED, answer
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    assert all(r.outcome != "open" for r in recorder.records)


async def both_framings_origin(stream: trio.SocketStream) -> None:
    """Declares Content-Length 3 and chunked: chunked wins (RFC 9112 §6.3)."""
    async with stream:
        await receive_head(stream)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"
        )


async def test_rfc9112_6_3_origin_with_both_framings_forwarded_by_chunked(
    nursery: trio.Nursery,
) -> None:
    ctx, _ = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    listeners = await nursery.start(
        partial(trio.serve_tcp, both_framings_origin, 0, host="127.0.0.1")
    )
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    result = await curl_async("-x", proxy, "-D", "-", url)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert body == b"0123456789"
    assert b"Content-Length" not in head


async def test_rfc9110_8_6_origin_content_length_beyond_63_bits_is_502_not_passed_on(
    nursery: trio.Nursery,
) -> None:
    """An origin's Content-Length that no 64-bit integer holds is refused before anything
    reaches the client: a 502 that names it, and the upstream's record says so."""

    async def origin(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc"
            )
            with trio.move_on_after(10):
                while await stream.receive_some(65536):
                    pass

    ctx, recorder = make_context()
    proxy = f"http://127.0.0.1:{await start_proxy(nursery, ctx)}"
    listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="127.0.0.1"))
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    result = await curl_async("-x", proxy, "-s", "-D", "-", url)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502"), result.stdout
    assert b"larger than a 63-bit integer holds" in body, body
    assert b"99999999999999999999" not in head
    outcomes = [r.outcome for r in recorder.records]
    assert any("larger than a 63-bit integer holds" in o for o in outcomes), outcomes
