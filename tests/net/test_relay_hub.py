"""The relay hub (socket tunnels' small traffic in one task): idle timeout, activity,
promotion on a full destination and at the splice threshold, many tunnels, half-close."""

from __future__ import annotations

import gc
import hashlib
import os
import random
import weakref

import pytest
import trio

from proxy64.defaults import HUB_TIMER_COMPACT, RELAY_IDLE_SLACK
from proxy64.net.context import ConnectionRecord
from proxy64.net.relay import relay
from proxy64.net.relay_hub import Ending, HubTunnel, RelayHub
from tests.helpers.fakes import blank_record as record
from tests.helpers.hub import start_hub
from tests.helpers.streams import receive_all, tcp_pair


async def test_idle_socket_tunnel_is_closed_after_idle_timeout(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """On trio's mock clock: the relay closes at the idle timeout (plus at most
    RELAY_IDLE_SLACK), not at a wall-clock time this machine's load could move."""
    hub = await start_hub(nursery)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    rec = record()
    with trio.fail_after(600):
        started = trio.current_time()
        await relay(client_side, remote_side, rec, idle_timeout=300, hub=hub)
        assert 300 <= trio.current_time() - started <= 300 + RELAY_IDLE_SLACK
        assert await receive_all(app_client) == b""  # closed by the relay
        assert await receive_all(app_remote) == b""
    assert rec.outcome == "idle for 300 s, closed"


async def test_traffic_pushes_the_idle_deadline(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    hub = await start_hub(nursery)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    rec = record()
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay(client_side, remote_side, rec, idle_timeout=300, hub=hub)
            )
            for i in range(6):  # 6 x 200 s: longer than the idle timeout, never idle
                await trio.sleep(200)
                await app_client.send_all(b"%d" % i)
                assert await app_remote.receive_some(10) == b"%d" % i
            await app_client.send_eof()
            await app_remote.send_eof()
            assert await receive_all(app_client) == b""
    assert rec.outcome == "ok"
    assert (rec.bytes_up, rec.bytes_down) == (6, 0)


async def test_full_destination_hands_over_without_losing_bytes(nursery: trio.Nursery) -> None:
    """The remote app reads nothing at first: the hub's write blocks, the task path takes
    the unwritten tail and the rest; every byte arrives once, in order (no splice)."""
    hub = await start_hub(nursery)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    rec = record()
    blob = os.urandom(8 * 1024 * 1024 + 1)
    got = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay(client_side, remote_side, rec, splice_threshold=None, hub=hub)
            )

            async def send() -> None:
                await app_client.send_all(blob)
                await app_client.send_eof()

            nursery.start_soon(send)
            await trio.sleep(0.5)  # let the buffers fill up
            got["up"] = await receive_all(app_remote)
            await app_remote.send_eof()
            assert await receive_all(app_client) == b""
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(blob).digest()
    assert rec.bytes_up == len(blob)
    assert rec.outcome == "ok"


async def test_many_tunnels_share_one_hub_and_keep_their_bytes_apart(nursery: trio.Nursery) -> None:
    hub = await start_hub(nursery)
    results: dict[int, bytes] = {}
    records = {}

    async def one(i: int) -> None:
        app_client, client_side = await tcp_pair()
        remote_side, app_remote = await tcp_pair()
        rec = records[i] = record()
        message = b"tunnel %d " % i * (i + 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: relay(client_side, remote_side, rec, hub=hub))
            await app_client.send_all(message)
            await app_client.send_eof()  # half-close: the answer still flows back
            echoed = await receive_all(app_remote)
            await app_remote.send_all(echoed[::-1])
            await app_remote.send_eof()
            results[i] = await receive_all(app_client)
        await app_client.aclose()
        await app_remote.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
    for i in range(40):
        message = b"tunnel %d " % i * (i + 1)
        assert results[i] == message[::-1]
        assert (records[i].bytes_up, records[i].bytes_down) == (len(message), len(message))
        assert records[i].outcome == "ok"
    assert hub._fds == {}  # every tunnel of the one hub has left it


@pytest.mark.parametrize("threshold", [None, 1000])
async def test_mixed_sizes_and_half_close_orders_keep_every_byte(
    threshold: int | None, nursery: trio.Nursery
) -> None:
    """Tunnels that stay in the hub, are promoted mid-stream (1000: at the first bigger
    chunk) or fill a slow reader, with either side half-closing first: sha256 both ways."""
    hub = await start_hub(nursery)
    rng = random.Random(7)
    plans = [
        (rng.randrange(0, 300_000), rng.randrange(0, 300_000), rng.random() < 0.5)
        for _ in range(16)
    ]
    outcomes: list[tuple[bytes, bytes, bytes, bytes, ConnectionRecord]] = []

    async def one(up_size: int, down_size: int, client_first: bool) -> None:
        up, down = rng.randbytes(up_size), rng.randbytes(down_size)
        app_client, client_side = await tcp_pair()
        remote_side, app_remote = await tcp_pair()
        rec = record()
        got: dict[str, bytes] = {}

        async def side(stream: trio.SocketStream, blob: bytes, key: str, delay: float) -> None:
            async with trio.open_nursery() as inner:

                async def reader() -> None:
                    got[key] = await receive_all(stream)

                inner.start_soon(reader)
                await trio.sleep(delay)
                await stream.send_all(blob)
                await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay(client_side, remote_side, rec, splice_threshold=threshold, hub=hub)
            )
            nursery.start_soon(side, app_client, up, "down", 0 if client_first else 0.05)
            nursery.start_soon(side, app_remote, down, "up", 0.05 if client_first else 0)
        await app_client.aclose()
        await app_remote.aclose()
        outcomes.append((up, got["up"], down, got["down"], rec))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for plan in plans:
                nursery.start_soon(one, *plan)
    assert len(outcomes) == len(plans)
    for up, got_up, down, got_down, rec in outcomes:
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
        assert (rec.bytes_up, rec.bytes_down) == (len(up), len(down))
        assert rec.outcome == "ok"


async def test_quiet_promoted_tunnel_goes_back_to_the_hub_and_still_works(
    nursery: trio.Nursery,
) -> None:
    """Bulk promotes a tunnel to the task/splice path; once both directions are quiet it
    returns to the hub (no task path frames held while idle); later bulk promotes it
    again; every byte arrives in order and the counts are exact."""
    hub = await start_hub(nursery)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    rec = record()
    fds = (client_side.socket.fileno(), remote_side.socket.fileno())
    blob = os.urandom(1024 * 1024)

    async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = await stream.receive_some(size - len(data))
            assert chunk
            data += chunk
        return bytes(data)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay(
                    client_side,
                    remote_side,
                    rec,
                    splice_threshold=4096,
                    splice_release_after=0.1,
                    hub=hub,
                )
            )
            await trio.sleep(0.05)
            assert all(fd in hub._fds for fd in fds)  # starts in the hub
            for round_ in range(2):
                async with trio.open_nursery() as inner:
                    inner.start_soon(app_client.send_all, blob)
                    assert await read_exactly(app_remote, len(blob)) == blob
                await trio.sleep(0.6)  # quiet: splice → copy → back to the hub
                assert all(fd in hub._fds for fd in fds), f"round {round_}: not back"
                await app_remote.send_all(b"small answer")
                assert await read_exactly(app_client, 12) == b"small answer"
            await app_client.send_eof()
            assert await receive_all(app_remote) == b""
            await app_remote.send_eof()
            assert await receive_all(app_client) == b""
    assert (rec.bytes_up, rec.bytes_down) == (2 * len(blob), 24)
    assert rec.outcome == "ok"
    assert not any(fd in hub._fds for fd in fds)


class _Timer:
    def __init__(self, again: list[float]) -> None:
        self.fired: list[float] = []
        self.again = again

    def expired(self, now: float) -> float | None:
        self.fired.append(now)
        return self.again.pop(0) if self.again else None


async def test_hub_timers_fire_in_order_repeat_and_stay_quiet_once_cancelled(
    nursery: trio.Nursery,
) -> None:
    hub = await start_hub(nursery)
    start = trio.current_time()
    first, second, cancelled = _Timer([start + 0.15]), _Timer([]), _Timer([])
    hub.call_at(start + 0.05, first)  # fires, asks again at +0.15, then is done
    hub.call_at(start + 0.1, second)
    handle = hub.call_at(start + 0.08, cancelled)
    handle.cancel()
    repeating = _Timer([start + 0.5])
    again = hub.call_at(start + 0.02, repeating)
    with trio.fail_after(5):
        await trio.sleep_until(start + 0.3)  # first has fired twice by now
        again.cancel()  # cancelled between two deadlines: never called again
        await trio.sleep(0.5)
    assert len(first.fired) == 2
    assert first.fired[0] >= start + 0.05 and first.fired[1] >= start + 0.15
    assert len(second.fired) == 1 and second.fired[0] >= start + 0.1
    assert cancelled.fired == []
    assert len(repeating.fired) == 1
    assert handle.timer is None and again.timer is None


class _Counting:
    """A hub Timer that counts its calls and is then done."""

    def __init__(self) -> None:
        self.calls = 0

    def expired(self, now: float) -> float | None:
        self.calls += 1
        return None


def test_cancelled_timers_do_not_accumulate_in_the_heap() -> None:
    """Each ended connection cancels its idle deadline (minutes away): the heap is
    compacted once cancelled entries are the majority, and live timers still fire."""
    hub = RelayHub()
    try:
        live = [_Counting() for _ in range(100)]
        for timer in live:
            hub.call_at(300.0, timer)
        for _ in range(20):  # 20 rounds of 1,000 connections that end at once
            handles = [hub.call_at(300.0, _Counting()) for _ in range(1000)]
            for handle in handles:
                handle.cancel()
            assert len(hub._timers) <= 2 * (100 + HUB_TIMER_COMPACT) + 1000
        hub._fire_timers(301.0)
        assert [t.calls for t in live] == [1] * 100
        assert hub._timers == [] and hub._cancelled == 0
    finally:
        hub._epoll.close()


async def test_a_connection_may_leave_a_hub_that_has_stopped() -> None:
    """A shutdown cancels the hub and the connections' drain together: a tunnel or a
    watched fd removed after run() closed the epoll set is not an error."""
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    hub = RelayHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        tunnel = hub.add(client_side.socket, remote_side.socket, record(), None)
        hub.watch(app_client.socket.fileno(), _NeverReadable())
        nursery.cancel_scope.cancel()
    assert hub._epoll.closed  # the premise: the hub has stopped
    hub.remove(tunnel)
    hub.unwatch(app_client.socket.fileno())
    for stream in (app_client, client_side, remote_side, app_remote):
        await stream.aclose()


class _NeverReadable:
    def readable(self, now: float) -> None:
        raise AssertionError("never called")


class _Owner:
    """A TunnelOwner that holds its tunnel, as a front end's connection does."""

    def __init__(self) -> None:
        self.tunnel: HubTunnel | None = None
        self.ended = trio.Event()

    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        assert tunnel is self.tunnel and tunnel.ending is Ending.DONE
        self.ended.set()


async def test_an_ended_owned_tunnel_leaves_no_cycle_with_its_owner(
    nursery: trio.Nursery,
) -> None:
    """Both sides' FIN end an owned tunnel; once its owner is told, the tunnel no longer
    points back at it, so the owner is freed by reference counting alone (the cyclic GC
    is off here), not by a later full collection."""
    hub = await start_hub(nursery)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    owner = _Owner()
    tunnel = hub.add(client_side.socket, remote_side.socket, record(), None, owner=owner)
    owner.tunnel = tunnel
    freed = weakref.ref(owner)
    gc.disable()
    try:
        with trio.fail_after(10):
            await app_client.send_eof()
            await app_remote.send_eof()
            await owner.ended.wait()
        assert tunnel.owner is None
        del owner
        assert freed() is None
    finally:
        gc.enable()
    for stream in (app_client, client_side, remote_side, app_remote):
        await stream.aclose()


async def test_an_owned_tunnel_that_idles_out_leaves_no_cycle(nursery: trio.Nursery) -> None:
    """expire_idle ends the tunnel for its owner (who asked): the link back goes too."""
    hub = await start_hub(nursery)
    app_client, client_side = await tcp_pair()
    remote_side, app_remote = await tcp_pair()
    owner = _Owner()
    tunnel = hub.add(client_side.socket, remote_side.socket, record(), None, owner=owner)
    owner.tunnel = tunnel
    assert hub.expire_idle(tunnel, 300, tunnel.last_active + 300) is None
    assert tunnel.ending is Ending.DONE
    assert tunnel.owner is None
    assert not owner.ended.is_set()  # the owner asked: it is not called back
    for stream in (app_client, client_side, remote_side, app_remote):
        await stream.aclose()


class _Readable:
    def __init__(self) -> None:
        self.calls = 0
        self.seen = trio.Event()

    def readable(self, now: float) -> None:
        self.calls += 1
        self.seen.set()


async def test_a_forgotten_fd_leaves_the_epoll_set_when_it_is_closed() -> None:
    """forget() drops a watched fd without an epoll_ctl because close(2) takes it out of
    the set: the fd's number, reused by the next socket, can be watched again at once
    (epoll_ctl ADD would fail with EEXIST otherwise), and only the new watcher hears of
    it."""
    import socket

    hub = RelayHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        first, first_peer = socket.socketpair()
        fd = first.fileno()
        old = _Readable()
        hub.watch(fd, old)
        hub.forget(fd)
        assert fd not in hub._watchers
        first.close()
        second, second_peer = socket.socketpair()
        if second.fileno() != fd:
            second_peer.close()
            second.close()
            first_peer.close()
            nursery.cancel_scope.cancel()
            pytest.skip("the kernel did not reuse the closed fd's number here")
        new = _Readable()
        hub.watch(fd, new)  # EEXIST if the closed fd were still in the set
        second_peer.send(b"y")
        with trio.fail_after(5):
            await new.seen.wait()
        hub.unwatch(fd)
        assert old.calls == 0
        for s in (second, second_peer, first_peer):
            s.close()
        nursery.cancel_scope.cancel()
