"""Serving until a signal: SIGINT/SIGTERM close the listeners and let live tunnels drain
(a repeated one cuts the drain), SIGHUP reloads; the gauges are sampled meanwhile, and a
worker's heartbeat tells its supervisor it lives.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import trio

from proxy64.app import SERVE_SIGNALS, nat64_info
from proxy64.defaults import (
    GC_YOUNG_THRESHOLD,
    WORKER_HEARTBEAT,
)
from proxy64.net.listeners import (
    ProxyServer,
)
from proxy64.net.metrics import Metrics, sample_gauges
from proxy64.net.nat64_state import Nat64State

logger = logging.getLogger(__name__)


async def serve_until_signal(
    server: ProxyServer,
    on_signal: Callable[[int], None] | None = None,
    heartbeat_fd: int | None = None,
    watch: Callable[..., Awaitable[None]] | None = None,
    *,
    metrics: Metrics | None = None,
    state: Nat64State | None = None,
    on_reload: Callable[[], bool] | None = None,
    repeat_cuts_drain: bool = True,
    heartbeat_every: float = WORKER_HEARTBEAT,
) -> None:
    """Serve until SIGINT/SIGTERM, then close the listeners and let live tunnels drain;
    SIGHUP calls on_reload (a Reloader's reload) and goes on. With metrics, the gauges
    (and the prefix in `state`) are sampled meanwhile. A worker's `heartbeat_fd` gets a
    byte every `heartbeat_every` seconds until the stop signal.

    A repeated stop signal while the tunnels drain cuts them at once when
    `repeat_cuts_drain` (a user pressing Ctrl-C again insists); otherwise it is the same
    request once more and is ignored. Wrap the trio.run that calls this in
    late_signals_ignored(): a signal that arrives after the last one read here is handed
    back by trio when its receiver closes.
    """
    with trio.open_signal_receiver(*SERVE_SIGNALS) as signals:
        # run_serve blocked them before printing the start-up line: a signal sent as soon
        # as that line appears was held until now and is delivered to this receiver.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SERVE_SIGNALS)
        beating = trio.CancelScope()
        listening = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            if heartbeat_fd is not None:  # from the start: a slow start-up is not a hang
                nursery.start_soon(_heartbeat, heartbeat_fd, heartbeat_every, beating)
            watching = trio.CancelScope()
            if watch is not None:
                await nursery.start(watch_until_cancelled, watch, watching)
            await nursery.start(_serve_then_cancel, server, listening)
            freeze_startup_heap()
            sampler = trio.CancelScope()
            if metrics is not None:
                nursery.start_soon(sample_gauges_while, metrics, server, state, sampler)
            with listening:
                stopping = False
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if on_reload is not None and not stopping:
                            on_reload()
                        continue
                    name = signal.Signals(signum).name
                    if not stopping:
                        stopping = True
                        logger.info("%s: closing listeners", name)
                        if on_signal is not None:
                            on_signal(signum)
                        server.stop()
                        beating.cancel()  # the supervisor no longer watches
                        watching.cancel()  # no prefix change matters to a proxy shutting down
                        sampler.cancel()
                    elif repeat_cuts_drain:
                        logger.info("%s again: closing every tunnel now", name)
                        nursery.cancel_scope.cancel()
                    else:
                        logger.debug("%s again: already stopping", name)
            watching.cancel()  # the server ended: nothing left to follow
            beating.cancel()
            sampler.cancel()


def freeze_startup_heap() -> None:
    """Move every object alive once serving begins (modules, configuration, the resolver,
    the listeners) out of the cyclic collector's generations: they live as long as the
    process, and a full collection would otherwise walk all of them each time, stalling
    every connection in flight. Start-up's own cyclic garbage is collected first, so
    nothing dead is kept for good. Young collections then come every GC_YOUNG_THRESHOLD
    allocations: most of a connection's objects die by reference counting before one."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def _serve_then_cancel(
    server: ProxyServer,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """server.run, then cancel `done` (the signal loop): the drain is over."""
    await server.run(task_status=task_status)
    done.cancel()


@contextlib.contextmanager
def late_signals_ignored() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP do nothing around a trio.run of serve_until_signal, except through
    its receiver. When trio.open_signal_receiver closes, it raises again every signal it
    got but nobody read, with the handler that was there before it: a second Ctrl-C that
    came while the tunnels drained (a worker gets each Ctrl-C twice: from the terminal's
    process group and from its supervisor) would become a KeyboardInterrupt traceback or
    a death by SIGTERM (or SIGHUP) in a process that is stopping cleanly anyway.

    Enter it with those signals blocked: a signal held then stays pending (a handler,
    unlike SIG_IGN, does not discard it) and reaches the receiver once it is up.
    """

    def already_stopping(signum: int, frame: object) -> None:
        logger.debug("%s: already stopping", signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, already_stopping) for signum in SERVE_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


async def sample_gauges_while(
    metrics: Metrics, server: ProxyServer, state: Nat64State | None, scope: trio.CancelScope
) -> None:
    """The gauges follow the connection slots in use (and the prefix) until `scope` ends."""
    slots = server.ctx.connection_slots
    with scope:
        await sample_gauges(
            metrics,
            lambda: int(slots.borrowed_tokens),
            nat64=None if state is None else partial(nat64_info, state),
        )


async def watch_until_cancelled(
    watch: Callable[..., Awaitable[None]],
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await watch(task_status=task_status)


async def _heartbeat(fd: int, every: float, scope: trio.CancelScope) -> None:
    """Tell the supervisor this worker's trio loop runs: one byte per `every` seconds,
    until `scope` is cancelled. A full pipe (the supervisor is slow to read) or a closed
    one is not a reason to stop serving."""
    with scope:
        try:
            while True:
                with contextlib.suppress(OSError):  # BlockingIOError, BrokenPipeError
                    os.write(fd, b".")
                await trio.sleep(every)
        finally:
            os.close(fd)
