"""Bodies of known length forwarded outside h11: exact bytes, exact counts,
keep-alive across such cycles (RFC 9112 §9.3), pipelined requests after a body, and the
failures in the middle of a body, on real sockets (splice) and on a memory stream (copy).

The origin here is a small trio + h11 server in the test that counts the bytes it really
received and sent on each connection, so the proxy's record can be checked to the byte.
Everything is on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio
import trio.testing

from proxy64.defaults import HTTP_RAW_BODY_MIN, HTTP_SPLICE_BODY_MIN
from tests.helpers.fakes import FakeDialer, ListRecorder, make_context
from tests.helpers.http_proxy import loopback_pair, serve_http, serve_socket

KB = 1024


def body_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Wire:
    """Bytes an origin connection really received and sent."""

    received: int = 0
    sent: int = 0


@dataclass
class CountingOrigin:
    port: int = 0
    wires: list[Wire] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        wire = Wire()
        self.wires.append(wire)
        conn = h11.Connection(h11.SERVER)

        async def send(event: h11.Event) -> None:
            data = conn.send(event)
            if data:
                await stream.send_all(data)
                wire.sent += len(data)

        async def next_event() -> h11.Event | type[h11.PAUSED]:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Event):
                    return event
                if event is h11.PAUSED:
                    return h11.PAUSED
                data = await stream.receive_some(65536)
                wire.received += len(data)
                conn.receive_data(data)

        try:
            while True:
                request = await next_event()
                if not isinstance(request, h11.Request):
                    return
                path = request.target.decode()
                received = hashlib.sha256()
                length = 0
                while isinstance(event := await next_event(), h11.Data):
                    if path.startswith("/drop-after/") and length >= int(path.split("/")[2]):
                        return  # close with the body half read
                    received.update(event.data)
                    length += len(event.data)
                if path.startswith("/bytes/"):  # /bytes/SIZE/SEED[/close]
                    parts = path.split("/")
                    body = body_of(int(parts[2]), int(parts[3]))
                    extra = [("Connection", "close")] if parts[-1] == "close" else []
                    headers = [("Content-Length", str(len(body))), *extra]
                else:
                    body = f"{length} {received.hexdigest()}".encode()
                    headers = [("Content-Length", str(len(body)))]
                await send(h11.Response(status_code=200, headers=headers))
                await send(h11.Data(data=body))
                await send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()


@pytest.fixture
async def counting_origin(nursery: trio.Nursery) -> CountingOrigin:
    origin = CountingOrigin()
    listeners = await nursery.start(partial(trio.serve_tcp, origin.handle, 0, host="127.0.0.1"))
    origin.port = listeners[0].socket.getsockname()[1]
    return origin


async def start_proxy(nursery: trio.Nursery) -> tuple[int, ListRecorder]:
    recorder = ListRecorder()
    ctx = make_context(FakeDialer(), recorder)
    return await serve_http(nursery, ctx), recorder


def post(origin: CountingOrigin, body: bytes, path: str = "/sink", version: str = "1.1") -> bytes:
    return (
        f"POST http://127.0.0.1:{origin.port}{path} HTTP/{version}\r\n"
        f"Host: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def get(origin: CountingOrigin, path: str, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"GET http://127.0.0.1:{origin.port}{path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n"
    ).encode()


class Client:
    """A client connection reading responses with its own h11 machine."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def response(self) -> tuple[h11.Response, bytes]:
        # The proxy answers as an HTTP/1.1 server; let the machine expect a response.
        self.conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        self.conn.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return head, bytes(body)
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def at_eof(self) -> bool:
        return await self.stream.receive_some(65536) == b""


def echo(body: bytes) -> bytes:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


async def test_keep_alive_across_bodies_outside_h11_with_pipelining_exact_counts(
    nursery: trio.Nursery, counting_origin: CountingOrigin
) -> None:
    """Uploads and downloads above and below the thresholds, the next request pipelined
    right behind a body, all on one client connection and one origin connection; the
    record's byte counts equal what the origin's socket saw."""
    port, recorder = await start_proxy(nursery)
    small = body_of(HTTP_RAW_BODY_MIN // 2, 1)
    medium = body_of(HTTP_RAW_BODY_MIN + 1, 2)  # outside h11, copied (below splice size)
    large = body_of(HTTP_SPLICE_BODY_MIN * 4 + 7, 3)  # outside h11, spliced
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = Client(stream)
        await stream.send_all(post(counting_origin, large) + get(counting_origin, "/bytes/10/4"))
        assert (await client.response())[1] == echo(large)
        assert (await client.response())[1] == body_of(10, 4)
        for size, seed in ((HTTP_SPLICE_BODY_MIN * 3 + 1, 5), (HTTP_RAW_BODY_MIN + 3, 6)):
            await stream.send_all(get(counting_origin, f"/bytes/{size}/{seed}"))
            assert (await client.response())[1] == body_of(size, seed)
        await stream.send_all(post(counting_origin, medium) + post(counting_origin, small))
        assert (await client.response())[1] == echo(medium)
        assert (await client.response())[1] == echo(small)
        await stream.aclose()
        (record,) = await recorder.wait_for(1)
    assert len(counting_origin.wires) == 1
    assert record.outcome == "ok"
    assert record.bytes_up == counting_origin.wires[0].received
    assert record.bytes_down == counting_origin.wires[0].sent


@pytest.mark.parametrize("version", ["1.0", "close"])
async def test_rfc9112_9_3_no_keep_alive_after_a_body_outside_h11(
    nursery: trio.Nursery, counting_origin: CountingOrigin, version: str
) -> None:
    port, _ = await start_proxy(nursery)
    size = HTTP_SPLICE_BODY_MIN * 2
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = Client(stream)
        if version == "1.0":
            request = get(counting_origin, f"/bytes/{size}/7", version="1.0")
        else:
            request = get(counting_origin, f"/bytes/{size}/7", extra="Connection: close\r\n")
        await stream.send_all(request)
        head, body = await client.response()
        assert body == body_of(size, 7)
        assert (b"connection", b"close") in [(n.lower(), v) for n, v in head.headers]
        assert await client.at_eof()  # the proxy closed its side after the response
        await stream.aclose()


async def test_origin_closing_after_body_is_redialed(
    nursery: trio.Nursery, counting_origin: CountingOrigin
) -> None:
    """An origin response with Connection: close, framed by Content-Length and moved
    outside h11: the next request goes on a new origin connection."""
    port, recorder = await start_proxy(nursery)
    size = HTTP_SPLICE_BODY_MIN + 5
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = Client(stream)
        for seed in (8, 9):
            await stream.send_all(get(counting_origin, f"/bytes/{size}/{seed}/close"))
            assert (await client.response())[1] == body_of(size, seed)
        await stream.aclose()
        records = await recorder.wait_for(2)
    assert len(counting_origin.wires) == 2
    assert [r.outcome for r in records] == ["ok", "ok"]
    assert [r.bytes_down for r in records] == [w.sent for w in counting_origin.wires]


async def test_client_bodies_trickled_in_odd_pieces_copied_exactly(
    counting_origin: CountingOrigin,
) -> None:
    """Bodies around the splice threshold, the client's bytes trickled in odd pieces."""
    recorder = ListRecorder()
    ctx = make_context(FakeDialer(), recorder)
    client_sock, theirs = loopback_pair()
    ours = trio.SocketStream(trio.socket.from_stdlib_socket(client_sock))
    upload = body_of(HTTP_SPLICE_BODY_MIN + 11, 10)
    size = HTTP_SPLICE_BODY_MIN * 2 + 13
    wire = post(counting_origin, upload) + get(counting_origin, f"/bytes/{size}/11")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_socket, ctx, theirs)
            for start in range(0, len(wire), 40_001):
                await ours.send_all(wire[start : start + 40_001])
            client = Client(ours)
            assert (await client.response())[1] == echo(upload)
            assert (await client.response())[1] == body_of(size, 11)
            await ours.send_eof()
            (record,) = await recorder.wait_for(1)
    assert record.bytes_up == counting_origin.wires[0].received
    assert record.bytes_down == counting_origin.wires[0].sent


async def test_origin_closing_mid_upload_is_502(
    nursery: trio.Nursery, counting_origin: CountingOrigin
) -> None:
    port, recorder = await start_proxy(nursery)
    upload = body_of(8 * 1024 * KB, 12)  # far more than the socket buffers hold
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = Client(stream)

        async def send_body() -> None:
            # the proxy stops reading after its answer: a broken send is expected
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(post(counting_origin, upload, "/drop-after/100000"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_body)
            head, body = await client.response()
            nursery.cancel_scope.cancel()
        await stream.aclose()
        (record,) = await recorder.wait_for(1)
    assert head.status_code == 502
    assert b"closed the connection" in body
    assert record.outcome.startswith(f"127.0.0.1:{counting_origin.port} closed the connection")


@pytest.mark.parametrize("where", ["request", "response"])
async def test_client_leaving_mid_body_ends_both_sides(
    nursery: trio.Nursery, counting_origin: CountingOrigin, where: str
) -> None:
    port, recorder = await start_proxy(nursery)
    size = HTTP_SPLICE_BODY_MIN * 64  # 16 MiB: more than the sockets buffer
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if where == "request":
            await stream.send_all(post(counting_origin, body_of(size, 13))[: size // 2])
        else:
            await stream.send_all(get(counting_origin, f"/bytes/{size}/14"))
            await stream.receive_some(65536)  # the response has started
        await stream.aclose()
        (record,) = await recorder.wait_for(1)
    assert record.outcome == "client closed the connection before the exchange was complete"
