"""`proxy64 serve --workers N` (N > 1): this process becomes a supervisor
(proxy64/net/supervisor.py): it forks N workers that start from the NAT64 choice already
made and each run their own watcher, restarts a worker that dies (with a backoff) and
stops them all by PID on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from proxy64.app import (
    EXIT_FAILURE,
    EXIT_OK,
    SERVE_SIGNALS,
    Bound,
    Load,
    announce,
    make_server,
    nat64_watcher,
    startup_line,
)
from proxy64.defaults import (
    WORKER_STOP_MARGIN,
)
from proxy64.net.listeners import bind_listener, bound_address
from proxy64.net.metrics import Metrics
from proxy64.net.metrics_http import MetricsServer
from proxy64.net.metrics_setup import open_supervisor_metrics
from proxy64.net.nat64_state import Nat64Choice, Nat64State
from proxy64.net.recorder import Recorder
from proxy64.net.supervisor import Spawned, Supervisor, heartbeat_interval
from proxy64.policy import PolicyInForce
from proxy64.reload import Reloader
from proxy64.serve_config import ServeSettings
from proxy64.serving import late_signals_ignored, serve_until_signal

logger = logging.getLogger(__name__)


def reserve_ports(bound: Bound) -> list[socket.socket]:
    """Bound, NOT listening SO_REUSEPORT sockets on the listeners' ports.

    They keep the ports ours while a worker restarts (only our user can join a
    SO_REUSEPORT port) and get no connections: the kernel spreads connections over
    listening sockets only, so the supervisor never holds one it does not accept on.
    """
    held: list[socket.socket] = []
    try:
        for sock in (bound.socks, bound.http):
            if sock is not None:
                address = bound_address(sock)
                held.append(bind_listener(address, reuse_port=True, listen=False))
    except BaseException:
        for reservation in held:
            reservation.close()
        raise
    return held


def _die_with_parent(parent: int) -> None:
    """Linux PR_SET_PDEATHSIG: SIGTERM this worker when the supervisor dies (even by SIGKILL)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def exit_alarm(seconds: float) -> Callable[[int], None]:
    """on_signal for a worker: once asked to stop, it is gone within `seconds` whatever
    happens (SIGALRM's default action ends the process). A worker whose supervisor was
    SIGKILLed gets SIGTERM from PR_SET_PDEATHSIG and nobody left to SIGKILL it if its
    shutdown hangs: this is that SIGKILL, armed by the worker itself."""

    def arm(signum: int) -> None:
        signal.alarm(max(1, math.ceil(seconds)))

    return arm


def _worker(
    settings: ServeSettings,
    mine: Bound,
    nat64: Nat64Choice,
    parent: int,
    heartbeat: int,
    *,
    load: Load | None,
) -> None:
    """In a forked worker: serve on its own sockets until SIGINT/SIGTERM; never returns."""
    code = EXIT_FAILURE
    try:
        _die_with_parent(parent)
        # SIGCHLD back to normal; SIGINT/SIGTERM/SIGHUP stay blocked until the receiver is up
        signal.pthread_sigmask(signal.SIG_SETMASK, SERVE_SIGNALS)
        state = Nat64State(nat64)
        # multiprocess mode, when --metrics is on, came with the fork (supervise_workers)
        metrics = Metrics() if settings.metrics is not None else None
        credentials = dict(settings.credentials) or None
        policy = PolicyInForce(settings.destination_policy())
        reloader = (
            Reloader(load, settings, credentials, quiet=True, policy=policy) if load else None
        )
        recorder = Recorder(metrics=metrics)
        server = make_server(
            settings, mine, state, recorder, metrics, credentials=credentials, policy=policy
        )
        stop_within = settings.shutdown_grace + WORKER_STOP_MARGIN
        watch = nat64_watcher(settings, state)  # each worker follows the prefix itself
        # The supervisor ends a worker that takes too long (and a second Ctrl-C SIGKILLs it):
        # a repeated signal here is the same Ctrl-C, from the process group and the supervisor.
        serve = partial(
            serve_until_signal,
            server,
            exit_alarm(stop_within),
            heartbeat,
            watch,
            metrics=metrics,
            state=state,
            on_reload=reloader.reload if reloader is not None else None,
            repeat_cuts_drain=False,
            heartbeat_every=heartbeat_interval(settings.worker_timeout),
        )
        with late_signals_ignored():
            trio.run(serve)
        code = EXIT_OK
    except BaseException:
        logger.exception("worker %d failed", os.getpid())
    finally:
        os._exit(code)  # never run the supervisor's code after fork


def supervise_workers(
    settings: ServeSettings,
    bound: Bound,
    nat64: Nat64Choice,
    out: Any,
    *,
    load: Load | None = None,
    config: Path | None = None,
) -> int:
    """Fork `workers` processes, each with its own SO_REUSEPORT listeners; keep them running.

    The supervisor keeps only non-listening reservations of the ports (reserve_ports); each
    worker's listening sockets are made just before its fork, so connections queue from then.
    On SIGHUP it checks the files once and passes the signal on when they are good; a
    worker forked later starts with the reloaded settings.
    """
    credentials = dict(settings.credentials) or None  # the supervisor's /metrics
    reloader = Reloader(load or (lambda: settings), settings, credentials, config)
    running: list[Supervisor] = []  # /healthz may be asked before the supervisor exists
    with open_supervisor_metrics(
        settings.metrics, credentials, lambda: any(s.pids() for s in running)
    ) as (endpoint, on_exit):
        line = startup_line(bound, nat64, settings.workers, endpoint)
        reservations = reserve_ports(bound)
        supervisor = _supervisor(
            lambda: reloader.settings,
            bound,
            nat64,
            reservations=reservations,
            endpoint=endpoint,
            on_exit=on_exit,
            load=load,
        )
        supervisor.on_reload = reloader.reload if load is not None else None
        running.append(supervisor)
        bound.close()  # a listening socket here would get connections nobody accepts
        try:
            supervisor.start()
            announce(line, settings, out)  # every worker's listeners accept from now on
            return supervisor.run()
        finally:
            for pid in supervisor.pids():  # only if run() did not finish: no worker outlives us
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for reservation in reservations:
                reservation.close()


def _supervisor(
    current: Callable[[], ServeSettings],
    bound: Bound,
    nat64: Nat64Choice,
    *,
    reservations: list[socket.socket],
    endpoint: MetricsServer | None,
    on_exit: Callable[[int, bool], None] | None,
    load: Load | None,
) -> Supervisor:
    """The Supervisor whose spawn(slot) forks a worker with its own listeners, and the
    settings in force at that moment (current(): reloaded ones after a SIGHUP)."""
    settings = current()
    addresses = (bound.socks_address, bound.http_address)
    parent = os.getpid()

    def spawn(slot: int) -> Spawned:
        socks, http = addresses
        first = bind_listener(socks, reuse_port=True) if socks else None
        try:
            mine = Bound(first, bind_listener(http, reuse_port=True) if http else None)
        except BaseException:
            if first is not None:
                first.close()
            raise
        beat_read = beat_write = -1
        try:
            beat_read, beat_write = os.pipe()
            os.set_blocking(beat_read, False)
            os.set_blocking(beat_write, False)
            pid = os.fork()
            if pid == 0:
                for reservation in reservations:
                    reservation.close()
                if endpoint is not None:
                    endpoint.close_in_child()
                for other in supervisor.slots:  # the other workers' heartbeat read ends
                    if other.heartbeat is not None:
                        os.close(other.heartbeat)
                os.close(beat_read)
                _worker(current(), mine, nat64, parent, beat_write, load=load)
        except BaseException:
            if beat_read >= 0:
                os.close(beat_read)
            raise
        finally:
            mine.close()  # the worker has its own copies (in the worker: never reached)
            if beat_write >= 0:
                os.close(beat_write)
        return Spawned(pid, beat_read)

    supervisor = Supervisor(
        spawn,
        settings.workers,
        stop_timeout=settings.shutdown_grace + WORKER_STOP_MARGIN,
        timeout=settings.worker_timeout,
        on_exit=on_exit,
    )
    return supervisor
