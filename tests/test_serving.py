"""serving.py: what serve_until_signal does once the listeners are up."""

from __future__ import annotations

import gc

import trio

from proxy64.defaults import GC_YOUNG_THRESHOLD
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


def test_the_startup_heap_leaves_the_collectors_generations_once_serving_begins() -> None:
    """A full collection walks only what connections allocate, not the start-up heap;
    young collections come every GC_YOUNG_THRESHOLD allocations, not CPython's 700."""
    gc.unfreeze()
    saved = gc.get_threshold()
    server = _Server()
    try:
        trio.run(serve_until_signal, server)
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
    assert server.frozen > 10_000  # the modules, functions and configuration loaded
    assert server.threshold == (GC_YOUNG_THRESHOLD, *saved[1:])
