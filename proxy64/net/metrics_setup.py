"""Putting --metrics together: the process's Metrics, its endpoint, the info collector.

Two shapes, both context managers that yield (None, ...) when --metrics is off:
- open_process_metrics: one process (`serve`, `run`, `tun`) counts into a private
  registry and serves it itself;
- open_supervisor_metrics: `serve --workers N`; multiprocess mode is turned on before
  any worker is forked, the supervisor serves the sum of every process's files and
  counts worker restarts; the directory is removed when it returns.
The NAT64 prefix info is a gauge each serving process samples from its own NAT64 state
(proxy64/net/metrics.py), so a prefix a watcher changes is reported as it is now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import disable_created_metrics

from proxy64.config import HostPort
from proxy64.net.metrics import SERVE_FRONT_ENDS, BuildInfo, Metrics
from proxy64.net.metrics_http import (
    MetricsServer,
    enable_multiprocess,
    forget_process,
    multiprocess_registry,
    remove_multiprocess,
)


@contextmanager
def open_process_metrics(
    address: HostPort | None,
    credentials: Mapping[str, str] | None,
    front_ends: tuple[str, ...] = SERVE_FRONT_ENDS,
) -> Iterator[tuple[Metrics | None, MetricsServer | None]]:
    if address is None:
        yield None, None
        return
    disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created`: no use here
    metrics = Metrics(front_ends=front_ends)
    metrics.registry.register(BuildInfo())
    registry = metrics.registry
    endpoint = MetricsServer(
        address, lambda: registry, credentials=credentials, healthy=metrics.alive
    )
    endpoint.start()
    try:
        yield metrics, endpoint
    finally:
        endpoint.close()


@contextmanager
def open_supervisor_metrics(
    address: HostPort | None,
    credentials: Mapping[str, str] | None,
    healthy: Callable[[], bool],
) -> Iterator[tuple[MetricsServer | None, Callable[[int, bool], None] | None]]:
    """(the endpoint, the supervisor's on_exit hook); workers build their own Metrics()
    after the fork, in the multiprocess mode inherited from here."""
    if address is None:
        yield None, None
        return
    directory = enable_multiprocess()
    try:
        metrics = Metrics()  # the supervisor's own series: worker restarts
        registry = multiprocess_registry(directory)
        registry.register(BuildInfo())
        endpoint = MetricsServer(
            address, lambda: registry, credentials=credentials, healthy=healthy
        )

        def on_exit(pid: int, restarting: bool) -> None:
            forget_process(directory, pid)
            metrics.worker_exited(pid, restarting)

        endpoint.start()
        try:
            yield endpoint, on_exit
        finally:
            endpoint.close()
    finally:
        remove_multiprocess(directory)
