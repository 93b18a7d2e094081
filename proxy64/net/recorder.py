"""The recorder (RecorderLike): one info log line per finished connection + the report.

The line says who connected, what they asked for, the address dialed, how it was reached
(native-ipv6 / dns64-synthesized / ipv4-literal-mapped), the egress (nat64 / embedded /
none), bytes each way, duration and outcome. It never contains credentials: a record holds
none. Each record is also added to the readiness report (proxy64/report.py).
"""

from __future__ import annotations

import logging
import time

from proxy64.net.context import ConnectionRecord
from proxy64.report import Observation, ReadinessReport

logger = logging.getLogger(__name__)


class Recorder:
    __slots__ = ("report",)

    def __init__(self, report: ReadinessReport | None = None) -> None:
        self.report = report if report is not None else ReadinessReport()

    def finish(self, record: ConnectionRecord) -> None:
        now = time.monotonic()
        duration = now - record.started
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
            logger.info(
                "%s %s → %s via %s %s egress %s up %d down %d %.3fs %s",
                record.front_end,
                record.client,
                destination,
                dialed,
                reached or "-",
                egress or ("none" if reached else "-"),
                record.bytes_up,
                record.bytes_down,
                duration,
                outcome,
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
                )
            )
