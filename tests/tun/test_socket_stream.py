"""TunSocketStream: a trio stream over a connected socket that yields by share."""

from __future__ import annotations

import os

import pytest
import trio

from proxy64.defaults import TUN_FAIR_SHARE
from proxy64.tun.socket_stream import TunSocketStream


async def _pair() -> tuple[TunSocketStream, TunSocketStream]:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    with trio.fail_after(5):
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    listener.close()
    return TunSocketStream(trio.SocketStream(client)), TunSocketStream(trio.SocketStream(server))


async def test_closed_stream_refuses_every_call() -> None:
    """trio's check_half_closeable_stream is not used: it asserts a schedule point in
    every call, which is exactly what this stream skips (it yields once per share)."""
    a, b = await _pair()
    await a.aclose()
    await a.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await a.send_eof()
    with trio.fail_after(5):
        assert await b.receive_some(10) == b""  # the peer saw our close as EOF
    await b.aclose()


async def test_cancelled_before_any_byte_is_taken() -> None:
    a, b = await _pair()
    await a.send_all(b"kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.receive_some(10)
    assert scope.cancelled_caught
    with trio.fail_after(5):
        assert await b.receive_some(10) == b"kept"  # the cancelled call took nothing
    await a.aclose()
    await b.aclose()


async def test_bulk_both_ways_exact_bytes_and_half_close() -> None:
    a, b = await _pair()
    down = os.urandom(3 * TUN_FAIR_SHARE + 12345)
    up = os.urandom(TUN_FAIR_SHARE // 3)
    got_down = bytearray()
    got_up = bytearray()

    async def drain(stream: TunSocketStream, into: bytearray) -> None:
        while chunk := await stream.receive_some(65536):
            into += chunk

    async def push(stream: TunSocketStream, data: bytes) -> None:
        await stream.send_all(data)
        await stream.send_eof()  # RFC 9293 §3.6: the other direction keeps flowing

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, b, got_down)
            nursery.start_soon(drain, a, got_up)
            nursery.start_soon(push, a, down)
            nursery.start_soon(push, b, up)
    assert bytes(got_down) == down
    assert bytes(got_up) == up
    await a.aclose()
    await b.aclose()


async def test_a_busy_stream_yields_to_other_tasks() -> None:
    """With data always ready the stream still lets another task run within a share."""
    a, b = await _pair()
    ticks = 0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await trio.lowlevel.checkpoint()

    total = 4 * TUN_FAIR_SHARE
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()  # the ticker has started
            start = ticks
            moved = 0
            nursery.start_soon(a.send_all, bytes(total))
            while moved < total:
                moved += len(await b.receive_some(65536))
            done.set()
    assert ticks - start >= 2  # at least one yield per share moved
    await a.aclose()
    await b.aclose()


async def test_reset_by_peer_is_broken_resource() -> None:
    a, b = await _pair()
    b.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    await b.aclose()  # linger 0: close sends RST
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        await a.receive_some(10)
    await a.aclose()
