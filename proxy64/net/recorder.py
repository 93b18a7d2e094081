"""The recorder (RecorderLike): one info log line per finished connection + the report.

The line says who connected, what they asked for, the address dialed, how it was reached
(native-ipv6 / dns64-synthesized / ipv4-literal-mapped), the egress (nat64 / embedded /
none), bytes each way, duration and outcome. It never contains credentials: a record holds
none. Each record is also added to the readiness report (proxy64/report.py) and, when
metrics are on, to the Prometheus counters (proxy64/net/metrics.py). With --log-format
json the same fields travel as the log record's `connection` attribute, which the JSON
formatter writes as one object per line (proxy64/commands/common.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from proxy64.net.context import ConnectionRecord, live_tunnels
from proxy64.report import Observation, ReadinessReport

if TYPE_CHECKING:  # prometheus-client is imported only when --metrics is given
    from proxy64.net.metrics import Metrics

logger = logging.getLogger(__name__)


class Recorder:
    __slots__ = ("metrics", "report")

    def __init__(
        self, report: ReadinessReport | None = None, metrics: Metrics | None = None
    ) -> None:
        self.report = report if report is not None else ReadinessReport()
        self.metrics = metrics

    def finish(self, record: ConnectionRecord) -> None:
        now = time.monotonic()
        duration = now - record.started
        if record.remote is not None:
            live_tunnels.count -= 1  # counted by record.reached_by()
        if self.metrics is not None:
            self.metrics.connection_finished(record)
        outcome = "ok" if record.outcome == "open" else record.outcome
        ok = outcome == "ok" or record.remote is not None
        destination = str(record.destination) if record.destination is not None else "-"
        reached = record.reached.value if record.reached is not None else None
        egress = record.egress.value if record.egress is not None else None
        if logger.isEnabledFor(logging.INFO):  # nothing formatted for the line otherwise
            if record.remote is not None:
                host, port = record.remote
                dialed = f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"
            else:
                dialed = "-"
            egress_text = egress or ("none" if reached else "-")
            logger.info(
                "%s %s → %s via %s %s egress %s up %d down %d %.3fs %s",
                record.front_end,
                record.client,
                destination,
                dialed,
                reached or "-",
                egress_text,
                record.bytes_up,
                record.bytes_down,
                duration,
                outcome,
                extra={
                    "connection": {
                        "front_end": record.front_end,
                        "client": record.client,
                        "destination": None if record.destination is None else destination,
                        "dialed": None if record.remote is None else dialed,
                        "reached": reached,
                        "egress": None if egress_text == "-" else egress_text,
                        "bytes_up": record.bytes_up,
                        "bytes_down": record.bytes_down,
                        "duration": round(duration, 6),
                        "outcome": outcome,
                    }
                },
            )
        if record.destination is not None:
            target = record.destination.host
            kind = "name" if isinstance(target, str) else f"ipv{target.version}"
            self.report.add(
                Observation(
                    destination=destination,
                    reached=reached,
                    egress=egress,
                    bytes_up=record.bytes_up,
                    bytes_down=record.bytes_down,
                    ok=ok,
                    outcome=outcome,
                    front_end=record.front_end,
                    kind=kind,
                    remote=record.remote[0] if record.remote is not None else None,
                    a_record_of=record.a_record_of,
                    span=(record.started, now),
                    strict_nat64_refuses=record.strict_nat64_refuses,
                )
            )
