"""The readiness report: what an app connected to, and how each destination was reached.

Aggregated per requested destination (name or literal, with port): how it was reached
(native-ipv6 / dns64-synthesized / ipv4-literal-mapped), the egress (nat64 / embedded),
connections, failures, bytes each way. Destinations reached through NAT64 are the app's
IPv4-only dependencies: the summary counts them. A destination under 64:ff9b::/96 in a range
a strict NAT64 refuses (RFC 6052 §3.1, tayga >= 0.9.4) is marked strict_nat64_refuses,
whether or not this network's NAT64 carried it: the app would fail on a stricter network.
Rendered as an aligned text table and
as JSON. Pure: fed with Observation values, no clock, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy64.defaults import REPORT_MAX_DESTINATIONS

REPORT_VERSION = 1
IPV4_ONLY = ("dns64-synthesized", "ipv4-literal-mapped")


@dataclass(frozen=True, slots=True)
class Observation:
    """One finished connection, as the report needs it."""

    destination: str  # "example.com:443", "192.0.2.1:80", "[2001:db8::1]:443"
    reached: str | None  # a Reached value, None when the dial never got an address
    egress: str | None  # an Egress value, None for native IPv6 or no dial
    bytes_up: int
    bytes_down: int
    ok: bool
    outcome: str = "ok"
    strict_nat64_refuses: bool = False


@dataclass(slots=True)
class DestinationStats:
    destination: str
    reached: set[str] = field(default_factory=set)
    egress: set[str] = field(default_factory=set)
    connections: int = 0
    failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    last_failure: str = ""
    strict_nat64_refuses: bool = False

    @property
    def ipv4_only(self) -> bool:
        return bool(self.reached) and self.reached <= set(IPV4_ONLY)

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "reached": sorted(self.reached),
            "egress": sorted(self.egress),
            "ipv4_only": self.ipv4_only,
            "connections": self.connections,
            "failures": self.failures,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "last_failure": self.last_failure,
            "strict_nat64_refuses": self.strict_nat64_refuses,
        }


OTHER = "(other destinations)"


class ReadinessReport:
    """Per-destination aggregate of observations, in first-seen order.

    Bounded: after max_destinations distinct destinations, new ones are added up in one
    OTHER row, so a long-running `serve` does not grow without limit.
    """

    def __init__(self, max_destinations: int = REPORT_MAX_DESTINATIONS) -> None:
        self._stats: dict[str, DestinationStats] = {}
        self._max = max_destinations

    def add(self, obs: Observation) -> None:
        stats = self._stats.get(obs.destination)
        if stats is None:
            key = obs.destination if len(self._stats) < self._max else OTHER
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = DestinationStats(key)
        stats.connections += 1
        stats.strict_nat64_refuses |= obs.strict_nat64_refuses
        if obs.reached is not None:
            stats.reached.add(obs.reached)
        if obs.egress is not None:
            stats.egress.add(obs.egress)
        stats.bytes_up += obs.bytes_up
        stats.bytes_down += obs.bytes_down
        if not obs.ok:
            stats.failures += 1
            stats.last_failure = obs.outcome

    def destinations(self) -> list[DestinationStats]:
        return list(self._stats.values())

    def summary(self) -> dict[str, int]:
        stats = self.destinations()
        return {
            "destinations": len(stats),
            "ipv4_only": sum(1 for s in stats if s.ipv4_only),
            "native_ipv6": sum(1 for s in stats if "native-ipv6" in s.reached),
            "connections": sum(s.connections for s in stats),
            "failures": sum(s.failures for s in stats),
            "strict_nat64_refuses": sum(1 for s in stats if s.strict_nat64_refuses),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "summary": self.summary(),
            "destinations": [s.as_dict() for s in self.destinations()],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def to_table(self) -> str:
        header = ("DESTINATION", "REACHED", "EGRESS", "CONNS", "FAILED", "UP", "DOWN")
        rows = [
            (
                s.destination,
                ",".join(sorted(s.reached)) or "-",
                ",".join(sorted(s.egress)) or "-",
                str(s.connections),
                str(s.failures),
                human_bytes(s.bytes_up),
                human_bytes(s.bytes_down),
            )
            for s in self.destinations()
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        numeric = {3, 4, 5, 6}

        def line(cells: tuple[str, ...]) -> str:
            parts = [
                c.rjust(widths[i]) if i in numeric else c.ljust(widths[i])
                for i, c in enumerate(cells)
            ]
            return "  ".join(parts).rstrip()

        summary = self.summary()
        lines = ["proxy64 readiness report", line(header), *(line(r) for r in rows)]
        lines.append(
            f"{_count(summary['destinations'], 'destination')}, {summary['ipv4_only']} "
            f"IPv4-only (reached through NAT64), "
            f"{_count(summary['connections'], 'connection')}, {summary['failures']} failed"
        )
        for s in self.destinations():
            if s.last_failure:
                lines.append(f"  {s.destination}: last failure: {s.last_failure}")
        for s in self.destinations():
            if s.strict_nat64_refuses:
                lines.append(
                    f"  {s.destination}: a strict NAT64 would refuse this (non-global IPv4 "
                    "under 64:ff9b::/96, RFC 6052 §3.1); see how the app fares with "
                    "--strict-wkp"
                )
        return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
