"""Prometheus metrics: what every connection, dial and DNS64 lookup adds up to.

One Metrics object per process, built by the composition root and fed from the places
every path already shares, so no front end knows about it:
- Recorder.finish (every SOCKS, HTTP and TUN connection ends there): connections by front
  end and outcome, bytes each way, how the destination was reached and the egress;
- MeteredDialer, a wrapper around the one dialer: dial duration, name resolution included;
- the DNS64 resolver's observer hook: lookups by outcome, cache hits;
- sample_gauges, a task that copies the live counts (connection slots in use, tunnels
  between reached_by and finish) into gauges once per METRICS_SAMPLE_INTERVAL;
- the supervisor's observer hook: worker restarts;
- the prefix of the NAT64 state (a watcher may change it), sampled with the gauges.
Names follow the Prometheus conventions: `proxy64_` prefix, base units (seconds, bytes),
`_total` on counters. No label holds a destination, an address or a user, so the number of
series stays fixed whatever the traffic. With `serve --workers N` every process writes its
values to prometheus-client's multiprocess files and the supervisor serves their sum
(proxy64/net/metrics_http.py).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import proxy64
from proxy64.defaults import (
    METRICS_DIAL_BUCKETS,
    METRICS_SAMPLE_INTERVAL,
    METRICS_STALE_AFTER,
)
from proxy64.destination import Destination
from proxy64.errors import DialError
from proxy64.net.context import ConnectionRecord, live_tunnels
from proxy64.net.dial_types import Dialed, DialerLike, PendingDial, UdpTarget
from proxy64.proto.dns64 import Dns64Answer, Outcome

# The outcome label of proxy64_connections_total: where the connection's life ended.
OK = "ok"
HANDSHAKE_FAILED = "handshake_failed"  # no destination: bad request, refused, client left
UNREACHABLE = "unreachable"  # a destination, no connected socket: DNS, mapping or dial failed
ABORTED = "aborted"  # connected, then ended abnormally: idle timeout, reset, shutdown
CONNECTION_OUTCOMES = (OK, HANDSHAKE_FAILED, UNREACHABLE, ABORTED)

DNS64_OUTCOMES = ("native", "synthesized", "nodata", "nxdomain", "error")
SERVE_FRONT_ENDS = ("socks5", "http-connect", "http")
TUN_FRONT_ENDS = ("tun-tcp", "tun-udp")


def connection_outcome(record: ConnectionRecord) -> str:
    """The outcome label of a finished record (a few fixed values, never the sentence)."""
    if record.outcome in ("ok", "open"):
        return OK
    if record.destination is None:
        return HANDSHAKE_FAILED
    if record.remote is None:
        return UNREACHABLE
    return ABORTED


def dns64_outcome(answer: Dns64Answer) -> str:
    """The outcome label of one DNS64 lookup (RFC 6147 §5.1: native AAAA or synthesized)."""
    if answer.outcome is Outcome.ANSWER:
        return "synthesized" if answer.synthesized else "native"
    if answer.outcome is Outcome.NODATA:
        return "nodata"
    if answer.outcome is Outcome.NXDOMAIN:
        return "nxdomain"
    return "error"  # SERVFAIL, or no upstream server answered


class Metrics:
    """The process's metric objects, in `registry` (a private one: never the global).

    `front_ends`: the ones this process has, whose connection series exist (at zero)
    from the first scrape, so a rate() over them has a start."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        front_ends: tuple[str, ...] = SERVE_FRONT_ENDS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sampled_at = time.monotonic()  # the event loop's last sample (alive())
        reg = self.registry
        self.connections = Counter(
            "proxy64_connections",
            "Client connections (SOCKS, HTTP requests, TUN flows) that ended, by front end "
            "and outcome",
            ["front_end", "outcome"],
            registry=reg,
        )
        self.relayed_bytes = Counter(
            "proxy64_relayed_bytes",
            "Bytes relayed, counted when the connection ends; direction up: client to "
            "destination, down: destination to client",
            ["front_end", "direction"],
            registry=reg,
        )
        self.reached = Counter(
            "proxy64_connections_reached",
            "Connections that got a destination address, by how it was reached and egress",
            ["reached", "egress"],
            registry=reg,
        )
        self.dial_duration = Histogram(
            "proxy64_dial_duration_seconds",
            "Time from a dial request to a connected socket or the failure, DNS64 "
            "resolution included",
            ["outcome"],
            buckets=METRICS_DIAL_BUCKETS,
            registry=reg,
        )
        self.dns64_lookups = Counter(
            "proxy64_dns64_lookups",
            "DNS64 lookups answered by the upstream servers, by outcome",
            ["outcome"],
            registry=reg,
        )
        self.dns64_cache_hits = Counter(
            "proxy64_dns64_cache_hits", "DNS64 answers served from the cache", registry=reg
        )
        self.connections_active = Gauge(
            "proxy64_connections_active",
            "Client connections (or TUN flows) being handled now",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.tunnels_active = Gauge(
            "proxy64_tunnels_active",
            "Connections with a connected destination, not yet ended",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.nat64_prefix = Gauge(
            "proxy64_nat64_prefix_info",
            "The NAT64 prefix in use (1), where it came from and the egress; a prefix this "
            "process used before reads 0",
            ["prefix", "source", "egress"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self._nat64: tuple[str, str, str] | None = None
        self.worker_restarts = Counter(
            "proxy64_worker_restarts",
            "Workers (serve --workers) that died or stopped answering and were restarted",
            registry=reg,
        )
        for front_end in front_ends:
            for outcome in CONNECTION_OUTCOMES:
                self.connections.labels(front_end, outcome)
        for outcome in DNS64_OUTCOMES:
            self.dns64_lookups.labels(outcome)

    def connection_finished(self, record: ConnectionRecord) -> None:
        front_end = record.front_end
        self.connections.labels(front_end, connection_outcome(record)).inc()
        if record.bytes_up:
            self.relayed_bytes.labels(front_end, "up").inc(record.bytes_up)
        if record.bytes_down:
            self.relayed_bytes.labels(front_end, "down").inc(record.bytes_down)
        if record.reached is not None:
            egress = record.egress.value if record.egress is not None else "none"
            self.reached.labels(record.reached.value, egress).inc()

    def dns64_answered(self, answer: Dns64Answer, from_cache: bool) -> None:
        if from_cache:
            self.dns64_cache_hits.inc()
        else:
            self.dns64_lookups.labels(dns64_outcome(answer)).inc()

    def alive(self) -> bool:
        """The event loop sampled recently: /healthz's answer (read on the endpoint's
        thread, so a stuck loop is seen)."""
        return time.monotonic() - self.sampled_at < METRICS_STALE_AFTER

    def worker_exited(self, pid: int, restarting: bool) -> None:
        if restarting:
            self.worker_restarts.inc()

    def sample(self, connections: int, nat64: tuple[str, str, str] | None = None) -> None:
        self.sampled_at = time.monotonic()
        self.connections_active.set(connections)
        self.tunnels_active.set(live_tunnels.count)
        if nat64 is not None and nat64 != self._nat64:
            if self._nat64 is not None:
                # 0 first: with --workers the files keep the last value, remove() alone
                # would leave a 1 there
                self.nat64_prefix.labels(*self._nat64).set(0)
                self.nat64_prefix.remove(*self._nat64)
            self.nat64_prefix.labels(*nat64).set(1)
            self._nat64 = nat64


async def sample_gauges(
    metrics: Metrics,
    connections: Callable[[], int],
    *,
    nat64: Callable[[], tuple[str, str, str]] | None = None,
    interval: float = METRICS_SAMPLE_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Copy the live counts into the gauges every `interval` seconds, until cancelled.

    Sampling, not a hook at each admission: the counts already exist (the connection
    slots, the TUN flow table, live_tunnels, the NAT64 state that a watcher may change),
    and with --workers the gauges are files that the supervisor adds up."""
    task_status.started()
    while True:
        metrics.sample(connections(), None if nat64 is None else nat64())
        await trio.sleep(interval)


class MeteredDialer:
    """A DialerLike that times every dial of the one dialer it wraps.

    connect() is timed around the call; connect_now()'s immediate answers are timed
    around it; a PendingDial is timed from its start (its deadline less the connect
    timeout) to finish()'s answer, finish_now()'s (the relay hub waited for it) or
    abandon() (its deadline passed)."""

    __slots__ = ("_inner", "_observe", "connect_timeout")

    def __init__(self, inner: DialerLike, metrics: Metrics, connect_timeout: float) -> None:
        self._inner = inner
        self._observe = metrics.dial_duration.labels
        self.connect_timeout = connect_timeout

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)  # resolver, prefix, egress, targets... as before

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        started = trio.current_time()
        try:
            dialed = await self._inner.connect(destination, client)
        except Exception:
            self._observe("failed").observe(trio.current_time() - started)
            raise
        self._observe("connected").observe(trio.current_time() - started)
        return dialed

    def connect_now(
        self, destination: Destination, client: str = ""
    ) -> Dialed | PendingDial | None:
        started = trio.current_time()
        try:
            answer = self._inner.connect_now(destination, client)
        except Exception:
            self._observe("failed").observe(trio.current_time() - started)
            raise
        if isinstance(answer, Dialed):
            self._observe("connected").observe(trio.current_time() - started)
        return answer

    async def finish(self, pending: PendingDial) -> Dialed:
        started = pending.deadline - self.connect_timeout
        try:
            dialed = await self._inner.finish(pending)
        except Exception:
            self._observe("failed").observe(trio.current_time() - started)
            raise
        self._observe("connected").observe(trio.current_time() - started)
        return dialed

    def finish_now(self, pending: PendingDial) -> Dialed:
        started = pending.deadline - self.connect_timeout
        try:
            dialed = self._inner.finish_now(pending)
        except Exception:
            self._observe("failed").observe(trio.current_time() - started)
            raise
        self._observe("connected").observe(trio.current_time() - started)
        return dialed

    def abandon(self, pending: PendingDial) -> DialError:
        self._observe("failed").observe(self.connect_timeout)  # the whole allowance
        return self._inner.abandon(pending)

    async def udp_target(self, destination: Destination, client: str = "") -> UdpTarget:
        return await self._inner.udp_target(destination, client)


class BuildInfo(Collector):
    """proxy64_build_info, added by the process that serves /metrics (value 1, the facts
    in labels: the Prometheus info-metric pattern)."""

    def collect(self) -> Iterable[Metric]:
        return self._metrics()

    def _metrics(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "proxy64_build_info",
            "The proxy64 version and the Python it runs on",
            labels=["version", "python"],
        )
        build.add_metric([proxy64.__version__, platform.python_version()], 1)
        yield build
