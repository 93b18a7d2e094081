"""A forwarded request's exchange stepped from the relay hub (net/steps.py): it waits for
the origin in the hub, under the executor's timer, and a task carries it on from a wait
the hub does not make (a client write that blocks, a body moved with splice). Each case
through the real HTTP listener, a FakeDialer (loopback only) and a scripted origin; and
run_stepped(), the task's driver, on its own."""

from __future__ import annotations

import dataclasses
import math
import secrets
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.steps import Readable, in_task, run_stepped, wait, write_all
from tests.helpers.cycles import cyclic_garbage
from tests.helpers.fakes import FakeDialer, ListRecorder
from tests.helpers.fakes import make_context as fakes_context
from tests.helpers.http_proxy import serve_http
from tests.helpers.streams import receive_head

Origin = Callable[[trio.SocketStream], Awaitable[None]]


def context(idle_timeout: float = 10.0) -> tuple[ProxyContext, ListRecorder]:
    recorder = ListRecorder()
    ctx = fakes_context(FakeDialer(), recorder)
    return dataclasses.replace(ctx, idle_timeout=idle_timeout), recorder


async def start(nursery: trio.Nursery, origin: Origin, ctx: ProxyContext) -> tuple[int, int]:
    """(proxy port, origin port)."""
    listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="127.0.0.1"))
    return await serve_http(nursery, ctx), int(listeners[0].socket.getsockname()[1])


async def get(proxy: int, origin: int, *, read_after: float = 0.0) -> bytes:
    """One GET through the proxy; what the client received until EOF or reset."""
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await client.connect(("127.0.0.1", proxy))
    head = f"GET http://127.0.0.1:{origin}/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    await client.send(head.encode())
    await trio.sleep(read_after)
    received = b""
    try:
        while data := await client.recv(1 << 16):
            received += data
    except ConnectionResetError:
        received += b"<reset>"
    client.close()
    return received


async def one_record(recorder: ListRecorder) -> ConnectionRecord:
    with trio.fail_after(5):
        await recorder.wait_for(1)
    (record,) = recorder.records
    return record


async def test_a_silent_origin_is_answered_504_by_the_hub_timer(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await receive_head(stream, short_ok=True)
        await trio.sleep(5)

    ctx, recorder = context(idle_timeout=0.3)
    proxy, origin = await start(nursery, silent, ctx)
    with trio.fail_after(5):
        answer = await get(proxy, origin)
    assert answer.startswith(b"HTTP/1.1 504 "), answer
    assert b"sent nothing for 0.3 s" in answer
    record = await one_record(recorder)
    assert record.outcome.endswith("sent nothing for 0.3 s"), record.outcome


async def test_a_response_in_pieces_waits_for_the_origin_each_time(
    nursery: trio.Nursery,
) -> None:
    async def slow(stream: trio.SocketStream) -> None:
        await receive_head(stream, short_ok=True)
        for part in (b"HTTP/1.1 200 OK\r\nTransfer-", b"Encoding: chunked\r\n\r\n", b"2\r\nhi"):
            await stream.send_all(part)
            await trio.sleep(0.05)
        await stream.send_all(b"\r\n0\r\n\r\n")

    ctx, recorder = context()
    proxy, origin = await start(nursery, slow, ctx)
    with trio.fail_after(5):
        answer = await get(proxy, origin)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    assert body == b"2\r\nhi\r\n0\r\n\r\n"
    assert (await one_record(recorder)).outcome == "ok"


async def test_the_origin_is_read_once_readable_until_its_response_starts(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request just written has not been answered yet: the exchange waits for the
    origin's socket to be readable before it reads (no read finds nothing)."""
    import os

    import proxy64.net.http_upstream as http_upstream

    empty: list[int] = []

    class CountingOs:
        """os as http_upstream sees it, counting the reads that found nothing."""

        def read(self, fd: int, size: int) -> bytes:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                empty.append(fd)
                raise

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

    async def late(stream: trio.SocketStream) -> None:
        await receive_head(stream, short_ok=True)
        await trio.sleep(0.1)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    monkeypatch.setattr(http_upstream, "os", CountingOs())
    ctx, recorder = context()
    proxy, origin = await start(nursery, late, ctx)
    with trio.fail_after(5):
        answer = await get(proxy, origin)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhi")
    assert (await one_record(recorder)).outcome == "ok"
    assert empty == []


async def test_an_origin_closing_in_the_middle_of_the_response_resets_the_client(
    nursery: trio.Nursery,
) -> None:
    async def cut(stream: trio.SocketStream) -> None:
        await receive_head(stream, short_ok=True)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await trio.sleep(0.05)
        await stream.aclose()

    ctx, recorder = context()
    proxy, origin = await start(nursery, cut, ctx)
    with trio.fail_after(5):
        answer = await get(proxy, origin)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"<reset>"), answer
    record = await one_record(recorder)
    assert record.outcome.endswith("closed the connection in the middle of the response")


async def test_a_client_write_that_blocks_is_carried_on_by_a_task(
    nursery: trio.Nursery,
) -> None:
    body = secrets.token_bytes(8 << 20)  # chunked: through h11, more than the socket takes

    async def big(stream: trio.SocketStream) -> None:
        await receive_head(stream, short_ok=True)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 1 << 16):
            piece = body[i : i + (1 << 16)]
            await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
        await stream.send_all(b"0\r\n\r\n")

    ctx, recorder = context()
    proxy, origin = await start(nursery, big, ctx)
    with trio.fail_after(20):
        answer = await get(proxy, origin, read_after=0.3)  # the proxy's writes block meanwhile
    _, _, chunked = answer.partition(b"\r\n\r\n")
    received, rest = b"", chunked
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        received, rest = received + rest[:size], rest[size + 2 :]
    assert received == body
    assert (await one_record(recorder)).outcome == "ok"


# --- run_stepped(): the task's driver --------------------------------------------------------


async def test_run_stepped_throws_a_passed_deadline_in_at_the_wait() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)

        async def waits() -> str:
            try:
                await wait(Readable(a.fileno(), trio.current_time() + 0.05))
            except trio.TooSlowError:
                return "timed out"
            return "readable"

        with trio.fail_after(5):
            assert await run_stepped(waits()) == "timed out"
        b.send(b"x")

        async def readable() -> str:
            await wait(Readable(a.fileno(), math.inf))
            return a.recv(1).decode()

        assert await run_stepped(readable()) == "x"


async def test_run_stepped_carries_out_in_task_and_write_all() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        data = secrets.token_bytes(4 << 20)  # more than the pair holds: write_all waits

        async def reader() -> bytes:
            received = b""
            while len(received) < len(data):
                await trio.lowlevel.wait_readable(b.fileno())
                received += b.recv(1 << 20)
            return received

        async def stepped() -> int:
            await write_all(a.fileno(), data)
            answer: int = await in_task(partial(trio.sleep, 0))  # None: a trio call's result
            return 0 if answer is None else 1

        results: list[object] = []

        async def collect() -> None:
            results.append(await reader())

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                assert await run_stepped(stepped()) == 0
        assert results == [data]


async def test_write_all_writes_each_byte_once_whether_or_not_a_write_falls_short() -> None:
    """One write when the socket takes it all; after a short write only the rest is
    written (bytes and memoryview alike), and nothing at all for an empty payload."""
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        small, large = b"head", secrets.token_bytes(1 << 20)
        received = bytearray()

        async def reader() -> None:
            while len(received) < len(small) + 2 * len(large):
                await trio.lowlevel.wait_readable(b.fileno())
                received.extend(b.recv(1 << 16))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await run_stepped(write_all(a.fileno(), small))
                await run_stepped(write_all(a.fileno(), large))
                # write_all is typed for the bytes its callers pass; a view must work too
                view = memoryview(large)
                await run_stepped(write_all(a.fileno(), view))  # type: ignore[arg-type]
        assert bytes(received) == small + large + large
    await run_stepped(write_all(a.fileno(), b""))  # a closed fd: no write is made


async def test_run_stepped_refuses_what_is_not_a_step() -> None:
    async def odd() -> None:
        await _Odd()

    with pytest.raises(TypeError, match="not a step"):
        await run_stepped(odd())


class _Odd:
    def __await__(self):  # type: ignore[no-untyped-def]
        return (yield "odd")


async def test_forwarded_requests_leave_no_cyclic_garbage(nursery: trio.Nursery) -> None:
    """A forwarded request's objects (executor, session, h11 machines, the stepped
    coroutine, its hub watcher, the record) are freed by reference counting, whether the
    exchange finished in the hub or in a task: with the collector off during the requests,
    a collection afterwards finds no proxy64 object in a cycle."""

    async def answer(stream: trio.SocketStream) -> None:
        await receive_head(stream, short_ok=True)
        await trio.sleep(0.02)  # the exchange waits for the origin
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    ctx, recorder = context()
    proxy, origin = await start(nursery, answer, ctx)
    with trio.fail_after(10):
        assert (await get(proxy, origin)).endswith(b"hi")  # warm-up
        await recorder.wait_for(1)
        with cyclic_garbage() as cyclic:
            for _ in range(3):
                assert (await get(proxy, origin)).endswith(b"hi")
            await recorder.wait_for(4)
            await trio.sleep(0.05)  # every close seen
    assert cyclic == []
