"""The relay: half-close, counters, integrity on the copy and splice paths, idle, fds."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from proxy64.defaults import RELAY_IDLE_SLACK
from proxy64.net import splice as splice_module
from proxy64.net.context import ConnectionRecord
from proxy64.net.relay import Relay, relay
from tests.helpers.fakes import blank_record as record
from tests.helpers.fds import fd_table_full
from tests.helpers.hub import running_hub, start_hub
from tests.helpers.streams import pipe_fds, receive_all, tcp_pair

# --- copy path over memory streams --------------------------------------------------------------


async def test_half_close_keeps_the_other_direction_flowing() -> None:
    app_client, client_side = trio.testing.memory_stream_pair()
    remote_side, app_remote = trio.testing.memory_stream_pair()
    rec = record()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, client_side, remote_side, rec)
            await app_client.send_all(b"request")
            await app_client.send_eof()  # client done sending (TCP FIN)
            assert await receive_all(app_remote) == b"request"  # EOF reached the remote
            # the remote still answers after the client's half-close
            await app_remote.send_all(b"response part 1, ")
            await app_remote.send_all(b"part 2")
            await app_remote.send_eof()
            assert await receive_all(app_client) == b"response part 1, part 2"
    assert (rec.bytes_up, rec.bytes_down) == (7, 23)
    assert rec.outcome == "ok"


async def test_remote_closes_first_client_keeps_sending() -> None:
    app_client, client_side = trio.testing.memory_stream_pair()
    remote_side, app_remote = trio.testing.memory_stream_pair()
    rec = record()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, client_side, remote_side, rec)
            await app_remote.send_all(b"banner")
            await app_remote.send_eof()
            assert await receive_all(app_client) == b"banner"
            for _ in range(3):
                await app_client.send_all(b"x" * 1000)
            await app_client.send_eof()
            assert await receive_all(app_remote) == b"x" * 3000
    assert (rec.bytes_up, rec.bytes_down) == (3000, 6)


def test_idle_timeout_closes_a_silent_tunnel() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    rec = record()

    async def main() -> float:
        app_client, client_side = trio.testing.memory_stream_pair()
        remote_side, app_remote = trio.testing.memory_stream_pair()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: relay(client_side, remote_side, rec, idle_timeout=30.0))
            await trio.sleep(20)
            await app_client.send_all(b"keepalive")  # activity resets the idle clock
            assert await app_remote.receive_some(100) == b"keepalive"
        return trio.current_time() - start

    elapsed = trio.run(main, clock=clock)
    # 30 s after the last byte, never earlier; the deadline is pushed lazily (at most once
    # per RELAY_IDLE_SLACK), so up to that much later
    assert 50.0 <= elapsed <= 50.0 + RELAY_IDLE_SLACK + 0.01
    assert rec.outcome == "idle for 30 s, closed"
    assert rec.bytes_up == 9


def test_idle_clock_follows_steady_traffic_then_closes_after_the_last_byte() -> None:
    """Bytes every 10 s keep a 30 s tunnel open for 100 s (the lazily pushed deadline
    never fires early); after the last byte it closes 30 s later, at most the slack late."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    rec = record()

    async def main() -> float:
        app_client, client_side = trio.testing.memory_stream_pair()
        remote_side, app_remote = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: relay(client_side, remote_side, rec, idle_timeout=30.0))
            for _ in range(10):
                await trio.sleep(10)
                await app_remote.send_all(b"tick")
                assert await app_client.receive_some(100) == b"tick"
            last = trio.current_time()
        return trio.current_time() - last

    after_last = trio.run(main, clock=clock)
    assert 30.0 <= after_last <= 30.0 + RELAY_IDLE_SLACK + 0.01
    assert rec.outcome == "idle for 30 s, closed"
    assert rec.bytes_down == 40


async def test_relay_class_is_relay_like() -> None:
    app_client, client_side = trio.testing.memory_stream_pair()
    remote_side, app_remote = trio.testing.memory_stream_pair()
    rec = record()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Relay(idle_timeout=5.0), client_side, remote_side, rec)
            await app_client.send_eof()
            await app_remote.send_eof()
            assert await receive_all(app_client) == b""
            assert await receive_all(app_remote) == b""


# --- real sockets: splice and copy ----------------------------------------------------------------


@asynccontextmanager
async def relayed(**options: Any) -> AsyncIterator[tuple[Any, Any, ConnectionRecord, Any]]:
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    rec = record()
    done = trio.Event()

    async with running_hub() as hub, trio.open_nursery() as nursery:

        async def run() -> None:
            await relay(client_side, remote_side, rec, hub=hub, **options)
            done.set()

        nursery.start_soon(run)
        try:
            yield app_client, app_remote, rec, done
        finally:
            await app_client.aclose()
            await app_remote.aclose()


async def send_then_eof(stream: trio.SocketStream, blob: bytes, chunk: int) -> None:
    view = memoryview(blob)
    for offset in range(0, len(blob), chunk):
        await stream.send_all(view[offset : offset + chunk])
    await stream.send_eof()


async def roundtrip(size: int, *, fds_full: bool = False, **options: Any) -> ConnectionRecord:
    """`size` bytes up and a little more down, both half-closed, through a relay made with
    `options`; with fds_full the transfer runs with the process's fd table full."""
    up = os.urandom(size)
    down = os.urandom(size + 12345)
    got: dict[str, bytes] = {}
    with trio.fail_after(60):
        async with relayed(**options) as (app_client, app_remote, rec, done):
            full = fd_table_full() if fds_full else contextlib.nullcontext()

            async def at_remote() -> None:
                got["up"] = await receive_all(app_remote)

            async def at_client() -> None:
                got["down"] = await receive_all(app_client)

            with full:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(at_remote)
                    nursery.start_soon(at_client)
                    nursery.start_soon(send_then_eof, app_client, up, 100_000)
                    # the remote answers in odd-sized pieces, after the client half-closed
                    nursery.start_soon(send_then_eof, app_remote, down, 77_777)
                await done.wait()
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    assert (rec.bytes_up, rec.bytes_down) == (len(up), len(down))
    assert rec.outcome == "ok"
    return rec


class SpliceCounter:
    def __init__(self, monkeypatch: Any) -> None:
        self.calls = 0
        real = splice_module.splice_direction

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr("proxy64.net.relay.splice_direction", counting)


class NotASocket(trio.abc.HalfCloseableStream):
    """A socket stream seen through a generic wrapper (like a TUN flow): copy path only."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_sha256_generic_stream_copy_path(monkeypatch: Any) -> None:
    """Streams that are not sockets use receive_some/send_all: same integrity."""
    counter = SpliceCounter(monkeypatch)
    up, down = os.urandom(3 * 1024 * 1024 + 5), os.urandom(2 * 1024 * 1024 + 7)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    rec = record()
    got: dict[str, bytes] = {}

    async def at_remote() -> None:
        got["up"] = await receive_all(app_remote)

    async def at_client() -> None:
        got["down"] = await receive_all(app_client)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, NotASocket(client_side), NotASocket(remote_side), rec)
            nursery.start_soon(at_remote)
            nursery.start_soon(at_client)
            nursery.start_soon(send_then_eof, app_client, up, 100_000)
            nursery.start_soon(send_then_eof, app_remote, down, 77_777)
    await app_client.aclose()
    await app_remote.aclose()
    assert got == {"up": up, "down": down}
    assert (rec.bytes_up, rec.bytes_down) == (len(up), len(down))
    assert counter.calls == 0


@pytest.mark.parametrize("threshold", [None, 0, 64 * 1024])
async def test_sha256_both_directions_with_half_close(
    threshold: int | None, monkeypatch: Any
) -> None:
    """None: fd copy only; 0: splice from the first byte; 64 KiB: fd copy, then switch."""
    if threshold is not None and not splice_module.HAVE_SPLICE:
        pytest.skip("os.splice is Linux-only")
    counter = SpliceCounter(monkeypatch)
    await roundtrip(8 * 1024 * 1024 + 3, splice_threshold=threshold)
    if threshold is None:
        assert counter.calls == 0
    else:
        assert counter.calls >= 2  # both directions moved to splice(2)


async def test_with_the_fd_table_full_a_tunnel_copies_what_it_cannot_splice(
    monkeypatch: Any,
) -> None:
    """Past the splice threshold no pipe can be made (fds ran out): the tunnel goes on
    copying, every byte both ways and an ordinary close, instead of breaking."""
    if not splice_module.HAVE_SPLICE:
        pytest.skip("os.splice is Linux-only")
    counter = SpliceCounter(monkeypatch)
    await roundtrip(4 * 1024 * 1024 + 9, fds_full=True, splice_threshold=64 * 1024)
    assert counter.calls >= 2  # both directions tried, found no pipe, and copied


async def test_idle_tunnel_holds_no_pipes() -> None:
    if not splice_module.HAVE_SPLICE:
        pytest.skip("os.splice is Linux-only")
    baseline = pipe_fds()
    with trio.fail_after(20):
        async with relayed(splice_threshold=0, splice_release_after=0.2) as (
            app_client,
            app_remote,
            rec,
            _,
        ):
            blob = os.urandom(2 * 1024 * 1024)

            async def drain() -> bytes:
                data = bytearray()
                while len(data) < len(blob):
                    data += await app_remote.receive_some(1 << 20)
                return bytes(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(app_client.send_all, blob)
                assert await drain() == blob
            # the client→remote direction has its pipe while the data flows...
            await trio.sleep(0.6)  # ...and gives it back once quiet
            assert pipe_fds() == baseline
            # the tunnel still works after the pipe was released
            await app_client.send_all(b"after quiet")
            assert await app_remote.receive_some(100) == b"after quiet"
            await trio.sleep(0.1)  # the relay counts just after its send_all returns
            assert rec.bytes_up == len(blob) + 11


async def test_reset_on_one_side_ends_the_tunnel() -> None:
    with trio.fail_after(10):
        async with relayed() as (app_client, app_remote, rec, done):
            await app_client.send_all(b"hello")
            assert await app_remote.receive_some(10) == b"hello"
            # RST from the remote: SO_LINGER 0 then close
            import socket
            import struct

            app_remote.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            app_remote.socket.close()
            await done.wait()
            # RFC 9293 §3.10.4: the reset is passed on, not turned into a FIN
            with pytest.raises(trio.BrokenResourceError) as info:
                await receive_all(app_client)
            assert isinstance(info.value.__cause__, ConnectionResetError)
    assert rec.outcome == "origin reset the connection"


@pytest.mark.parametrize("threshold", [None, 0, 1])
async def test_relayed_pair_passes_check_half_closeable_stream(
    threshold: int | None, nursery: trio.Nursery
) -> None:
    """Two apps talking through the relay behave like one TCP connection (trio's checks)."""
    if threshold is not None and not splice_module.HAVE_SPLICE:
        pytest.skip("os.splice is Linux-only")

    hub = await start_hub(nursery)

    async def maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        app_client, client_side = await tcp_pair()
        remote_side, app_remote = await tcp_pair()
        nursery.start_soon(
            lambda: relay(client_side, remote_side, record(), splice_threshold=threshold, hub=hub)
        )
        return app_client, app_remote

    with trio.fail_after(60):
        await trio.testing.check_half_closeable_stream(maker, None)


async def test_splice_slow_reader_then_eof_delivers_every_held_byte() -> None:
    """The remote reads late and in small pieces: dst and the pipe fill, the loop waits for
    writability with bytes held in the pipe, and the FIN arrives while they are still
    there; every byte must come out, in order, before the half-close is passed on."""
    if not splice_module.HAVE_SPLICE:
        pytest.skip("os.splice is Linux-only")
    blob = os.urandom(12 * 1024 * 1024 + 5)
    with trio.fail_after(60):
        async with relayed(splice_threshold=0) as (app_client, app_remote, rec, done):

            async def slow_reader() -> bytes:
                await trio.sleep(0.3)  # the sender is done (FIN sent) long before this
                data = bytearray()
                while chunk := await app_remote.receive_some(
                    4096 if len(data) < 1 << 20 else 1 << 20
                ):
                    data += chunk
                return bytes(data)

            got: list[bytes] = []

            async def read_into() -> None:
                got.append(await slow_reader())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_into)
                nursery.start_soon(send_then_eof, app_client, blob, 1 << 20)
            await app_remote.send_eof()
            assert await app_client.receive_some(10) == b""
            await done.wait()
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(blob).digest()
    assert rec.bytes_up == len(blob)
    assert rec.outcome == "ok"
