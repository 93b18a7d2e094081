"""The readiness report: what an app connected to, and how each destination was reached.

Aggregated per requested destination (name or literal, with port): how it was reached
(native-ipv6 / dns64-synthesized / ipv4-literal-mapped), the egress (nat64 / embedded),
connections, failures, bytes each way, the front ends that carried it and the addresses
dialed (proxy64/readiness.py turns these into verdicts; proxy64/readiness_render.py
renders the whole). Destinations reached through NAT64 are the app's IPv4-only
dependencies: the summary counts them. strict_nat64_refuses marks a destination the dialer
found under 64:ff9b::/96 in a range a strict NAT64 refuses (RFC 6052 §3.1), dialed or not.
Pure: fed with Observation values, no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

from proxy64.defaults import REPORT_MAX_ADDRESSES, REPORT_MAX_DESTINATIONS, REPORT_MAX_SPANS

IPAddress = IPv4Address | IPv6Address
IPV4_ONLY = ("dns64-synthesized", "ipv4-literal-mapped")


# Not frozen: one is made per finished connection and only read by add(), and a frozen
# dataclass sets each of its fields through object.__setattr__, a Python call per field.
@dataclass(slots=True)
class Observation:
    """One finished connection, as the report needs it."""

    destination: str  # "example.com:443", "192.0.2.1:80", "[2001:db8::1]:443"
    reached: str | None  # a Reached value, None when the dial never got an address
    egress: str | None  # an Egress value, None for native IPv6 or no dial
    bytes_up: int
    bytes_down: int
    ok: bool
    outcome: str = "ok"
    front_end: str = ""  # "socks5", "http-connect", "tun-tcp", ... (ConnectionRecord)
    kind: str = "name"  # what the app gave: "name", "ipv4" or "ipv6" (a literal)
    remote: IPAddress | None = None  # the address dialed, None when no dial happened
    a_record_of: str | None = None  # tun: the name whose A record an AF_INET flow used
    span: tuple[float, float] | None = None  # monotonic start and end of the connection
    strict_nat64_refuses: bool = False  # the dialer's mark (ConnectionRecord)


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
    kind: str = "name"
    front_ends: set[str] = field(default_factory=set)
    remotes: set[IPAddress] = field(default_factory=set)  # bounded: REPORT_MAX_ADDRESSES
    literals4: set[IPv4Address] = field(default_factory=set)
    a_record_of: set[str] = field(default_factory=set)  # bounded: REPORT_MAX_ADDRESSES
    spans: list[tuple[float, float]] = field(default_factory=list)  # the first REPORT_MAX_SPANS
    strict_nat64_refuses: bool = False  # any connection to it was marked so

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
            "front_ends": sorted(self.front_ends),
            "addresses": sorted(str(a) for a in self.remotes),
            "a_record_of": sorted(self.a_record_of),
            "strict_nat64_refuses": self.strict_nat64_refuses,
        }


OTHER = "(other destinations)"


class ReadinessReport:
    """Per-destination aggregate of observations, in first-seen order.

    Bounded: after max_destinations distinct destinations, new ones are added up in one
    OTHER row, so a long-running `serve` does not grow without limit.
    """

    def __init__(
        self,
        max_destinations: int = REPORT_MAX_DESTINATIONS,
        *,
        prefix: IPv6Network | None = None,
    ) -> None:
        self._stats: dict[str, DestinationStats] = {}
        self._max = max_destinations
        self.prefix = prefix  # the NAT64 prefix in use: decides strict-NAT64 refusals
        # A queries the app sent to the TUN's DNS64, per name (tun run): IPv4-aware code
        self.a_lookups: Counter[str] = Counter()

    def add(self, obs: Observation) -> None:
        stats = self._stats.get(obs.destination)
        if stats is None:
            key = obs.destination if len(self._stats) < self._max else OTHER
            stats = self._stats.get(key)
            if stats is None:
                kind = obs.kind if key != OTHER else "mixed"
                stats = self._stats[key] = DestinationStats(key, kind=kind)
                if kind == "ipv4":  # the row of one IPv4 literal: its address, once
                    stats.literals4.add(IPv4Address(key.rpartition(":")[0]))
        stats.connections += 1
        stats.strict_nat64_refuses |= obs.strict_nat64_refuses
        if obs.front_end:
            stats.front_ends.add(obs.front_end)
        if obs.remote is not None and len(stats.remotes) < REPORT_MAX_ADDRESSES:
            stats.remotes.add(obs.remote)
        if obs.span is not None and len(stats.spans) < REPORT_MAX_SPANS:
            stats.spans.append(obs.span)
        if obs.a_record_of is not None and len(stats.a_record_of) < REPORT_MAX_ADDRESSES:
            stats.a_record_of.add(obs.a_record_of)
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
        }
