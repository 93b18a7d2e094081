"""Composition root: settings → resolver, dialer, relay hub, relay → ProxyContext → listeners.

The only place where the parts meet: one resolver, one dialer and one relay hub, built
here (build_parts) and injected into every front end and into `tun run`/`tun serve`
(never module globals); the listeners' front ends are chosen here too. Start-up:
1. bind the listeners (stdlib sockets, so --workers can fork after binding);
2. choose the NAT64 prefix and egress ("auto": PREF64 from RAs, systemd-networkd,
   RFC 7050, in RFC 9872's order; proxy64/net/nat64_watch.py);
3. print ONE line: where it listens, which prefix and egress and why;
4. serve until SIGINT/SIGTERM: listeners close, live tunnels get shutdown_grace seconds;
   SIGHUP re-reads the config and auth files (proxy64/reload.py).
   With "auto" a watcher follows the prefix meanwhile (one Nat64State shared by the
   resolver and the dialer).
With --workers N (N > 1) this process becomes a supervisor (proxy64/net/supervisor.py):
it forks N workers that start from the choice made in step 2 and each run their own
watcher, restarts a worker that dies (with a backoff) and stops them all by PID on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from proxy64.config import HostPort
from proxy64.defaults import (
    AUTH_FAILURE_DELAY,
    AUTH_FAILURE_DELAY_MAX,
    AUTH_FAILURE_FORGET,
    AUTH_FAILURE_TRACKED,
    PREF64_STARTUP_WAIT,
    WORKER_HEARTBEAT,
    WORKER_STOP_MARGIN,
)
from proxy64.errors import ConfigError
from proxy64.logformat import json_line
from proxy64.net.auth_gate import AuthGate
from proxy64.net.context import ProxyContext
from proxy64.net.dial_types import DialerLike
from proxy64.net.dialer import Dialer
from proxy64.net.host_addresses import local_addresses
from proxy64.net.host_info import HostInfo
from proxy64.net.http_server import HTTP
from proxy64.net.listeners import (
    Listening,
    ProxyServer,
    bind_listener,
    bound_address,
    describe_bind_error,
)
from proxy64.net.metrics import MeteredDialer, Metrics, sample_gauges
from proxy64.net.metrics_http import MetricsServer
from proxy64.net.metrics_setup import open_process_metrics, open_supervisor_metrics
from proxy64.net.nat64_state import Nat64Choice, Nat64State
from proxy64.net.nat64_watch import Nat64Sources, first_choice, follow_nat64, rfc7050_lookup
from proxy64.net.recorder import Recorder
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.resolver import DNS64Resolver
from proxy64.net.slots import ConnectionSlots
from proxy64.net.socks_server import SOCKS
from proxy64.net.supervisor import Spawned, Supervisor
from proxy64.policy import PolicyInForce
from proxy64.proto.auth_delay import AuthDelay
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.proto.self_dial import OwnListeners
from proxy64.reload import Reloader
from proxy64.report import ReadinessReport
from proxy64.serve_config import ServeSettings

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SERVE_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)  # SIGHUP: reload (proxy64/reload.py)
Load = Callable[[], ServeSettings]  # settings from the same sources again (SIGHUP)


@dataclass(frozen=True, slots=True)
class Bound:
    """Listening sockets, bound before trio starts (and before --workers forks)."""

    socks: socket.socket | None
    http: socket.socket | None

    @property
    def socks_address(self) -> HostPort | None:
        return bound_address(self.socks) if self.socks is not None else None

    @property
    def http_address(self) -> HostPort | None:
        return bound_address(self.http) if self.http is not None else None

    def close(self) -> None:
        for sock in (self.socks, self.http):
            if sock is not None:
                sock.close()


def bind(settings: ServeSettings, *, reuse_port: bool = False) -> Bound:
    """Bind both listeners; a bind failure is a ConfigError naming the option."""
    socks = http = None
    try:
        for option, address in (("--socks", settings.socks), ("--http", settings.http)):
            if address is None:
                continue
            try:
                sock = bind_listener(address, reuse_port=reuse_port)
            except OSError as exc:
                raise ConfigError(option, describe_bind_error(address, exc)) from None
            if option == "--socks":
                socks = sock
            else:
                http = sock
    except BaseException:
        Bound(socks, http).close()
        raise
    return Bound(socks, http)


# --- resolver and NAT64 choice ------------------------------------------------------------


async def choose_nat64(
    settings: ServeSettings,
    discover_fn: Callable[[tuple[HostPort, ...]], Any] | None = None,
    *,
    ra_wait: float = PREF64_STARTUP_WAIT,
    pref64: bool = True,
) -> Nat64Choice:
    """The prefix and egress to use, and why (shown in the start-up line).

    discover_fn replaces RFC 7050 discovery (prefixes, or None for no answer); pref64
    False leaves out the PREF64 sources (RAs and networkctl).
    """
    fixed = first_choice(settings.egress, settings.nat64_prefix)
    if fixed is not None:
        return fixed
    sources = nat64_sources(settings, discover_fn, pref64=pref64)
    return await sources.startup(ra_wait)


def nat64_sources(
    settings: ServeSettings,
    discover_fn: Callable[[tuple[HostPort, ...]], Any] | None = None,
    *,
    pref64: bool = True,
) -> Nat64Sources:
    """The discovery sources for settings; discover_fn and pref64 as in choose_nat64."""
    rfc7050 = rfc7050_lookup
    if discover_fn is not None:
        ask = discover_fn

        async def rfc7050(
            servers: tuple[HostPort, ...],
        ) -> tuple[list[Nat64Prefix], int | None] | None:
            found = await ask(servers)
            return None if found is None else (list(found), None)

    if pref64:
        return Nat64Sources(settings.dns, settings.egress, rfc7050=rfc7050)
    return Nat64Sources(
        settings.dns, settings.egress, rfc7050=rfc7050, open_ra_socket=None, networkctl=None
    )


def nat64_watcher(
    settings: ServeSettings, state: Nat64State
) -> Callable[..., Awaitable[None]] | None:
    """The task that follows the network's prefix (None: the prefix is fixed)."""
    if first_choice(settings.egress, settings.nat64_prefix) is not None:
        return None

    async def watch(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await follow_nat64(state, nat64_sources(settings), task_status=task_status)

    return watch


def report_follows(report: ReadinessReport, state: Nat64State) -> None:
    """The readiness report judges destinations with the prefix in use when it ends."""

    def follow(old: Nat64Choice, new: Nat64Choice) -> None:
        report.prefix = new.prefix.network

    state.on_change(follow)


def startup_line(
    bound: Bound, nat64: Nat64Choice, workers: int = 1, metrics: MetricsServer | None = None
) -> str:
    socks = bound.socks_address
    http = bound.http_address
    line = (
        f"proxy64: SOCKS5 {socks or 'off'}, HTTP {http or 'off'}; "
        f"NAT64 prefix {nat64.prefix} ({nat64.why}), egress {nat64.egress.value}"
    )
    if workers > 1:
        line += f"; {workers} workers"
    if metrics is not None:
        line += f"; metrics {metrics.url}"
    return line


def announce(line: str, settings: ServeSettings, out: Any) -> None:
    """The start-up line: as text, or with --log-format json as one JSON object."""
    if settings.log_format == "json":
        line = json_line(line, event="startup")
    print(line, file=out, flush=True)


def nat64_info(state: Nat64State) -> tuple[str, str, str]:
    """prefix, source, egress in use now: proxy64_nat64_prefix_info's labels."""
    choice = state.choice
    return str(choice.prefix), choice.source, choice.egress.value


# --- the parts ----------------------------------------------------------------------------


def auth_delay() -> AuthDelay:
    """The failed-authentication policy, from proxy64/defaults.py."""
    return AuthDelay(
        base=AUTH_FAILURE_DELAY,
        cap=AUTH_FAILURE_DELAY_MAX,
        forget_after=AUTH_FAILURE_FORGET,
        max_tracked=AUTH_FAILURE_TRACKED,
    )


def own_listeners(bound: Bound) -> OwnListeners:
    """proxy64's listeners as bound, and this host's addresses: what the dialer refuses."""
    addresses = [a for a in (bound.socks_address, bound.http_address) if a is not None]
    return OwnListeners.of(((a.host, a.port) for a in addresses), local_addresses())


@dataclass(frozen=True, slots=True)
class Parts:
    """What every front end shares, built once per serving process: one resolver (it also
    answers the TUN's DNS), one dialer over it, one relay hub (its owner runs it: the
    proxy server, or `tun`), one relay that moves tunnels through it."""

    resolver: DNS64Resolver
    dialer: DialerLike
    hub: RelayHub
    relay: Relay


def build_parts(
    settings: ServeSettings,
    nat64: Nat64Choice | Nat64State,
    metrics: Metrics | None = None,
    *,
    own: OwnListeners | None = None,
    policy: PolicyInForce | None = None,
) -> Parts:
    """own: the listeners a dial must not reach (None: none known, as in tests).
    policy: the destination policy to share with a Reloader, which replaces its rules;
    by default the settings' own."""
    state = nat64 if isinstance(nat64, Nat64State) else Nat64State(nat64)
    resolver = DNS64Resolver(settings.resolver_settings(), state, observer=metrics)
    dialer: DialerLike = Dialer(
        resolver,
        state,
        connect_timeout=settings.connect_timeout,
        own_listeners=own,
        policy=policy if policy is not None else PolicyInForce(settings.destination_policy()),
        host_info=HostInfo(),
    )
    if metrics is not None:
        dialer = MeteredDialer(dialer, metrics, settings.connect_timeout)
    hub = RelayHub()
    return Parts(resolver, dialer, hub, Relay(idle_timeout=settings.idle_timeout, hub=hub))


def build_context(
    settings: ServeSettings,
    parts: Parts,
    recorder: Recorder,
    credentials: dict[str, str] | None = None,
) -> ProxyContext:
    """credentials: the dict to share (with the metrics endpoint and a Reloader, which
    updates it in place); by default a copy of settings.credentials, None when empty."""
    if credentials is None:
        credentials = dict(settings.credentials) or None
    return ProxyContext(
        dialer=parts.dialer,
        recorder=recorder,
        relay=parts.relay,
        credentials=credentials,
        handshake_timeout=settings.handshake_timeout,
        idle_timeout=settings.idle_timeout,
        connection_slots=ConnectionSlots(
            settings.max_connections, settings.max_client_connections
        ),
        auth_gate=AuthGate(auth_delay()) if settings.credentials else None,
        connect_timeout=settings.connect_timeout,
        hub=parts.hub,
    )


def make_server(
    settings: ServeSettings,
    bound: Bound,
    nat64: Nat64Choice | Nat64State,
    recorder: Recorder,
    metrics: Metrics | None = None,
    *,
    credentials: dict[str, str] | None = None,
    policy: PolicyInForce | None = None,
) -> ProxyServer:
    """The proxy server of one process: its parts, its context, and each listener with its
    front end: SOCKS and HTTP each through the one executor (net/executor.py)."""
    listening: list[Listening] = []
    if bound.socks is not None:
        listening.append(Listening(bound.socks, None, SOCKS.opener()))
    if bound.http is not None:
        listening.append(Listening(bound.http, None, HTTP.opener()))
    parts = build_parts(settings, nat64, metrics, own=own_listeners(bound), policy=policy)
    ctx = build_context(settings, parts, recorder, credentials)
    return ProxyServer(ctx, listening, grace=settings.shutdown_grace)


# --- `proxy64 serve` ------------------------------------------------------------------------


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
) -> None:
    """Serve until SIGINT/SIGTERM, then close the listeners and let live tunnels drain;
    SIGHUP calls on_reload (a Reloader's reload) and goes on. With metrics, the gauges
    (and the prefix in `state`) are sampled meanwhile.

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
            watching = trio.CancelScope()
            if watch is not None:
                await nursery.start(_watch_until_cancelled, watch, watching)
            await nursery.start(_serve_then_cancel, server, listening)
            sampler = trio.CancelScope()
            if metrics is not None:
                nursery.start_soon(_sample, metrics, server, state, sampler)
            if heartbeat_fd is not None:
                nursery.start_soon(_heartbeat, heartbeat_fd, beating)
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


async def _sample(
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


async def _watch_until_cancelled(
    watch: Callable[..., Awaitable[None]],
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await watch(task_status=task_status)


async def _heartbeat(fd: int, scope: trio.CancelScope) -> None:
    """Tell the supervisor this worker's trio loop runs: one byte per WORKER_HEARTBEAT,
    until `scope` is cancelled. A full pipe (the supervisor is slow to read) or a closed
    one is not a reason to stop serving."""
    with scope:
        try:
            while True:
                with contextlib.suppress(OSError):  # BlockingIOError, BrokenPipeError
                    os.write(fd, b".")
                await trio.sleep(WORKER_HEARTBEAT)
        finally:
            os.close(fd)


def run_serve(
    settings: ServeSettings,
    *,
    out: Any = None,
    load: Load | None = None,
    config: Path | None = None,
) -> int:
    """The whole `proxy64 serve`: bind, choose, print one line, serve (or supervise workers).

    The NAT64 choice (discovery included) is made once, here, before any fork: every
    worker, restarted ones too, starts from it (and follows changes on its own), and the
    start-up line is printed once. `load` rebuilds the settings from their sources on
    SIGHUP (`config`: the file, named in the error line of a failed reload).
    """
    out = out if out is not None else sys.stderr
    workers = settings.workers
    bound = bind(settings, reuse_port=workers > 1)
    try:
        nat64 = trio.run(choose_nat64, settings)
        state = Nat64State(nat64)
        if workers > 1:
            make_server(settings, bound, state, Recorder())  # fails before "ready"
            signal.pthread_sigmask(signal.SIG_BLOCK, SERVE_SIGNALS)  # until the receiver is up
            return supervise_workers(settings, bound, nat64, out, load=load, config=config)
        credentials = dict(settings.credentials) or None  # shared; a reload updates it
        policy = PolicyInForce(settings.destination_policy())  # and replaces its rules
        reloader = Reloader(load, settings, credentials, config, policy=policy) if load else None
        with open_process_metrics(settings.metrics, credentials) as (metrics, endpoint):
            recorder = Recorder(metrics=metrics)
            server = make_server(
                settings, bound, state, recorder, metrics, credentials=credentials, policy=policy
            )
            signal.pthread_sigmask(signal.SIG_BLOCK, SERVE_SIGNALS)  # until the receiver is up
            announce(startup_line(bound, nat64, metrics=endpoint), settings, out)
            serve = partial(
                serve_until_signal,
                server,
                None,
                None,
                nat64_watcher(settings, state),
                metrics=metrics,
                state=state,
                on_reload=reloader.reload if reloader is not None else None,
            )
            with late_signals_ignored():
                trio.run(serve)
        return EXIT_OK
    finally:
        bound.close()


# --- `serve --workers N` ----------------------------------------------------------------------


def reserve_ports(bound: Bound) -> list[socket.socket]:
    """Bound, NOT listening SO_REUSEPORT sockets on the listeners' ports.

    They keep the ports ours while a worker restarts (only our user can join a
    SO_REUSEPORT port) and get no connections: the kernel spreads connections over
    listening sockets only, so the supervisor never holds one it does not accept on.
    """
    held: list[socket.socket] = []
    try:
        for sock in (bound.socks, bound.http):
            if sock is None:
                continue
            reservation = socket.socket(sock.family, socket.SOCK_STREAM)
            held.append(reservation)
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sock.family == socket.AF_INET6:
                reservation.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            reservation.bind(sock.getsockname())
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


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: a signal n becomes 128+n."""
    return 128 - returncode if returncode < 0 else returncode


def proxy_environment(
    environ: dict[str, str],
    socks: HostPort | None,
    http: HostPort | None,
    credentials: tuple[str, str] | None = None,
) -> dict[str, str]:
    """http(s)_proxy → the HTTP listener, ALL_PROXY → SOCKS5 (socks5h: the proxy resolves).

    With authentication on, the URLs carry the first user's credentials (percent-encoded),
    so the command can authenticate. NO_PROXY/no_proxy are left as the user had them.
    """
    userinfo = ""
    if credentials is not None:
        user, password = credentials
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    env = dict(environ)
    if http is not None:
        url = f"http://{userinfo}{http}"
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env[name] = url
    if socks is not None:
        url = f"socks5h://{userinfo}{socks}"
        for name in ("ALL_PROXY", "all_proxy"):
            env[name] = url
        if http is None:
            for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
                env[name] = url
    return env


async def run_command(
    server: ProxyServer,
    bound: Bound,
    command: Sequence[str],
    environ: dict[str, str],
    watch: Callable[..., Awaitable[None]] | None = None,
    *,
    metrics: Metrics | None = None,
    state: Nat64State | None = None,
) -> int:
    """Serve while `command` runs with the proxy variables set; its exit status back.

    The listeners are bound (and listening) already, so the command may connect at once.
    """
    credentials = server.ctx.credentials
    first = next(iter(credentials.items())) if credentials else None
    env = proxy_environment(environ, bound.socks_address, bound.http_address, first)
    try:
        process = await trio.lowlevel.open_process(list(command), env=env)
    except OSError as exc:
        # as env(1) and shells do: 127 when the command is not found, 126 when not runnable
        sys.stderr.write(f"proxy64 run: cannot start {command[0]!r}: {exc.strerror}\n")
        return EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_RUN
    try:
        async with trio.open_nursery() as nursery:
            watching = trio.CancelScope()
            if watch is not None:
                await nursery.start(_watch_until_cancelled, watch, watching)
            await nursery.start(server.run)
            sampler = trio.CancelScope()
            if metrics is not None:
                nursery.start_soon(_sample, metrics, server, state, sampler)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(_forward_signals, signals, process)
                    await process.wait()
                    waiting.cancel_scope.cancel()
            server.stop()  # the command is done: close listeners, let tunnels drain
            watching.cancel()
            sampler.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return exit_status(process.returncode if process.returncode is not None else 1)


async def _forward_signals(signals: Any, process: trio.Process) -> None:
    async for signum in signals:
        if signum != signal.SIGINT:  # a terminal's Ctrl-C reached the command already
            process.send_signal(signum)


def run_with_command(
    settings: ServeSettings, command: Sequence[str], environ: dict[str, str]
) -> tuple[int, ReadinessReport]:
    """The whole `proxy64 run`: the proxy on the given (default free) ports, then CMD."""
    bound = bind(settings)
    try:
        nat64 = trio.run(choose_nat64, settings)
        credentials = dict(settings.credentials) or None
        with open_process_metrics(settings.metrics, credentials) as (metrics, endpoint):
            recorder = Recorder(ReadinessReport(prefix=nat64.prefix.network), metrics=metrics)
            state = Nat64State(nat64)
            report_follows(recorder.report, state)
            server = make_server(settings, bound, state, recorder, metrics, credentials=credentials)
            announce(startup_line(bound, nat64, metrics=endpoint), settings, sys.stderr)
            watch = nat64_watcher(settings, state)
            run = partial(
                run_command, server, bound, command, environ, watch, metrics=metrics, state=state
            )
            status = trio.run(run)
        return status, recorder.report
    finally:
        bound.close()
