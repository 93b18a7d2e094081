"""serving.py: what serve_until_signal does once the listeners are up, and a worker's
heartbeat from the loop's start."""

from __future__ import annotations

import gc
import os

import trio
import trio.testing

from proxy64.defaults import GC_YOUNG_THRESHOLD
from proxy64.net.listeners import ProxyServer
from proxy64.serving import serve_until_signal


class _Server:
    """Listens (task_status.started), then records the collector's frozen count and ends."""

    frozen = -1
    threshold = (0, 0, 0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(0.01)  # serve_until_signal goes on once the server listens
        self.frozen = gc.get_freeze_count()
        self.threshold = gc.get_threshold()

    def stop(self) -> None:
        pass


def as_proxy_server(stand_in: _Server | _SlowStart) -> ProxyServer:
    """A stand-in as the ProxyServer serve_until_signal is typed for: without metrics it
    uses only the server's run() and stop(), which the stand-ins have."""
    return stand_in  # type: ignore[return-value]


def test_the_startup_heap_leaves_the_collectors_generations_once_serving_begins() -> None:
    """A full collection walks only what connections allocate, not the start-up heap;
    young collections come every GC_YOUNG_THRESHOLD allocations, not CPython's 700."""
    gc.unfreeze()
    saved = gc.get_threshold()
    server = _Server()
    try:
        trio.run(serve_until_signal, as_proxy_server(server))
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
    assert server.frozen > 10_000  # the modules, functions and configuration loaded
    assert server.threshold == (GC_YOUNG_THRESHOLD, *saved[1:])


class _SlowStart:
    """Takes `seconds` (mock time) before it listens, as a start-up waiting on DNS can;
    counts the heartbeats written by then, then ends."""

    def __init__(self, seconds: float, beats: int) -> None:
        self.seconds, self.beats, self.beats_at_listen = seconds, beats, -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(self.seconds)
        try:
            self.beats_at_listen = len(os.read(self.beats, 4096))
        except BlockingIOError:
            self.beats_at_listen = 0
        task_status.started()

    def stop(self) -> None:
        pass


def test_a_worker_beats_while_it_starts_so_a_slow_start_up_is_not_taken_for_a_hang() -> None:
    """The supervisor counts silence from the fork: the first beat comes at once, not
    after the listeners are up, and the beats go on every heartbeat_every meanwhile."""
    beats, beat_write = os.pipe()
    os.set_blocking(beats, False)
    server = _SlowStart(2.75, beats)
    saved = gc.get_threshold()
    try:
        trio.run(
            lambda: serve_until_signal(
                as_proxy_server(server), None, beat_write, heartbeat_every=0.5
            ),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
        os.close(beats)
    assert server.beats_at_listen == 6  # at 0, 0.5, ... 2.5 s: all before the listeners
