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

import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from proxy64.config import HostPort
from proxy64.defaults import (
    AUTH_FAILURE_DELAY,
    AUTH_FAILURE_DELAY_MAX,
    AUTH_FAILURE_FORGET,
    AUTH_FAILURE_TRACKED,
    PREF64_STARTUP_WAIT,
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
from proxy64.net.metrics import MeteredDialer, Metrics
from proxy64.net.metrics_http import MetricsServer
from proxy64.net.nat64_state import Nat64Choice, Nat64State
from proxy64.net.nat64_watch import Nat64Sources, first_choice, follow_nat64, rfc7050_lookup
from proxy64.net.recorder import Recorder
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.resolver import DNS64Resolver
from proxy64.net.slots import ConnectionSlots
from proxy64.net.socks_server import SOCKS
from proxy64.policy import PolicyInForce
from proxy64.proto.auth_delay import AuthDelay
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.proto.self_dial import OwnListeners
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
        connection_slots=ConnectionSlots(settings.max_connections, settings.max_client_connections),
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
        listening.append(Listening(bound.socks, SOCKS.opener()))
    if bound.http is not None:
        listening.append(Listening(bound.http, HTTP.opener()))
    parts = build_parts(settings, nat64, metrics, own=own_listeners(bound), policy=policy)
    ctx = build_context(settings, parts, recorder, credentials)
    return ProxyServer(ctx, listening, grace=settings.shutdown_grace)
