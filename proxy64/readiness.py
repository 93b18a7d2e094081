"""IPv6-only readiness: one verdict per destination, and the gate a CI job sets.

A verdict says which network the destination needs, from what proxy64 saw of it:

- native-ipv6: a real AAAA record or an IPv6 literal; works on any IPv6-only network.
- nat64: reached through a synthesized AAAA (RFC 6147): an IPv4-only dependency that
  needs the network's DNS64 and NAT64.
- clat: an IPv4 literal given to the proxy, a name whose only address is an IPv4-only
  hosts-file entry, or an AF_INET socket inside `tun run`: no DNS64 can help,
  so it works only where a CLAT (RFC 6877 464XLAT) translates the host's own IPv4.
- strict-nat64-refused: non-global IPv4 under the well-known prefix 64:ff9b::/96; a
  strict translator refuses it (RFC 6052 §3.1), whatever the app does.
- failed: no connection to it succeeded, for a reason none of the above explains.

An AF_INET attempt in `tun run` to a name's A record, answered unreachable while the app
was connecting to that name over IPv6, is Happy Eyeballs (RFC 8305) racing, not a
dependency: its row takes the name's verdict.

The gate (--require LEVEL) passes when every destination was reached at least once in
this run and its verdict is one the level allows. Pure: stats in, verdicts out.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Network

from proxy64.defaults import HAPPY_EYEBALLS_LEAD, WELL_KNOWN_PREFIX
from proxy64.destination import Reached
from proxy64.policy import LOOPBACK4
from proxy64.proto.rfc6052 import Nat64Prefix, strict_nat64_refuses
from proxy64.report import DestinationStats


class Verdict(enum.Enum):
    """Best first: the network each needs grows down the list."""

    NATIVE = "native-ipv6"
    NAT64 = "nat64"
    CLAT = "clat"
    STRICT_REFUSED = "strict-nat64-refused"
    FAILED = "failed"


class Level(enum.Enum):
    """--require LEVEL: what every destination must reach for the run to pass."""

    REACHABLE = "reachable"  # reached in this run, by whatever translation
    NO_CLAT = "no-clat"  # works on a plain DNS64/NAT64 network (Apple's test network)
    NATIVE = "native"  # works with no translation at all


ALLOWED: dict[Level, frozenset[Verdict]] = {
    Level.REACHABLE: frozenset(Verdict) - {Verdict.FAILED},
    Level.NO_CLAT: frozenset({Verdict.NATIVE, Verdict.NAT64}),
    Level.NATIVE: frozenset({Verdict.NATIVE}),
}

LEVEL_HELP = {
    Level.REACHABLE: "every destination was reached (through NAT64 or a CLAT if need be)",
    Level.NO_CLAT: "and none needs a CLAT or a lenient NAT64: works on a plain DNS64/NAT64 "
    "network such as Apple's test network",
    Level.NATIVE: "and none needs NAT64 at all: every destination has native IPv6",
}

TUN_FRONT_ENDS = ("tun-tcp", "tun-udp")


@dataclass(frozen=True, slots=True)
class Assessment:
    """One destination's verdict, its one-line reason, and whether it was reached."""

    destination: str
    verdict: Verdict
    reason: str
    reached: bool

    def breaks(self, level: Level) -> bool:
        return not self.reached or self.verdict not in ALLOWED[level]


def _embedded_ipv4(stats: DestinationStats, prefix: Nat64Prefix | None) -> list[IPv4Address]:
    """The IPv4 addresses the destination stands for: dialed directly (embedded egress),
    inside the NAT64 prefix (RFC 6052 §2.3), or given as a literal."""
    found: list[IPv4Address] = []
    for remote in sorted(stats.remotes, key=str):
        if isinstance(remote, IPv4Address):
            found.append(remote)
        elif prefix is not None and prefix.contains(remote):
            found.append(prefix.extract(remote))
    found.extend(a for a in sorted(stats.literals4) if a not in found)
    return found


def _strict_refused(stats: DestinationStats, prefix: Nat64Prefix | None) -> str | None:
    """The IPv4 address a strict NAT64 refuses for this destination, or None. A dial that
    failed leaves no address in the stats: the dialer's mark (strict_nat64_refuses) says
    so then."""
    found = None
    if prefix is not None and prefix.network == WELL_KNOWN_PREFIX:
        # (a network-specific prefix carries every IPv4 address)
        embedded = _embedded_ipv4(stats, prefix)
        found = next((a for a in embedded if strict_nat64_refuses(a)), None)
    if found is not None:
        return str(found)
    return "its IPv4 address" if stats.strict_nat64_refuses else None


def _this_host(stats: DestinationStats) -> bool:
    """Dialed on this host's loopback (localhost, 127/8): any network has it."""
    if stats.reached == {Reached.THIS_HOST.value}:
        return True
    return bool(stats.literals4) and all(a in LOOPBACK4 for a in stats.literals4)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tail(stats: DestinationStats) -> str:
    """How the run went for it: nothing when all connections worked."""
    if not stats.failures:
        return ""
    last = _one_line(stats.last_failure)
    if stats.failures == stats.connections:
        return f"; failed here: {last}"
    return f"; {stats.failures} of {stats.connections} failed, last: {last}"


def _protocols(stats: DestinationStats) -> str:
    tun = stats.front_ends & set(TUN_FRONT_ENDS)
    return "/".join(sorted(fe.removeprefix("tun-").upper() for fe in tun))


def _attempts(stats: DestinationStats) -> str:
    return f"{stats.connections} attempt{'s' if stats.connections != 1 else ''}"


def _raced(attempts: DestinationStats, over_ipv6: DestinationStats) -> bool:
    """Every AF_INET attempt started while an IPv6 connection to the name was open, or
    just before one (an IPv4-first client): the two halves of one RFC 8305 race. An app
    that dials the same address later, on its own, is not explained away."""
    if not attempts.spans or len(attempts.spans) < attempts.connections:
        return False  # some attempts not kept: judge conservatively
    return all(
        any(start - HAPPY_EYEBALLS_LEAD <= t <= end for start, end in over_ipv6.spans)
        for t, _ in attempts.spans
    )


def _happy_eyeballs_fallback(
    stats: DestinationStats, elsewhere: Mapping[str, tuple[Verdict, DestinationStats]]
) -> Assessment | None:
    """AF_INET attempts to a name's A record that failed while the app was connecting to
    the same name and port over IPv6: RFC 8305 racing, harmless on an IPv6-only network
    (the AF_INET attempt fails at once there). The row takes the name's verdict."""
    if stats.connections > stats.failures:
        return None  # --ipv4 translated it: the app did use IPv4
    port = stats.destination.rpartition(":")[2]
    name = next(
        (
            n
            for n in sorted(stats.a_record_of)
            if f"{n}:{port}" in elsewhere and _raced(stats, elsewhere[f"{n}:{port}"][1])
        ),
        None,
    )
    if name is None:
        return None
    reason = (
        f"{name}'s A record, tried over an AF_INET {_protocols(stats)} socket too "
        f"({_attempts(stats)}) and answered unreachable; the app went on over IPv6 "
        f"(see {name}:{port}): no CLAT needed"
    )
    return Assessment(stats.destination, elsewhere[f"{name}:{port}"][0], reason, True)


def _hidden_ipv4(stats: DestinationStats, reached: bool) -> Assessment:
    names = sorted(stats.a_record_of)
    source = f"{names[0]}'s A record" if names else "a literal"
    what = f"an AF_INET {_protocols(stats)} socket inside tun run to {source} ({_attempts(stats)})"
    if reached:
        reason = f"{what}, translated by --ipv4: works only with a CLAT (464XLAT)"
    else:
        reason = (
            f"{what}, answered network unreachable as an IPv6-only network does: "
            "works only with a CLAT (464XLAT)"
        )
    return Assessment(stats.destination, Verdict.CLAT, reason, reached)


def assess(
    stats: DestinationStats,
    prefix: Nat64Prefix | None,
    elsewhere: Mapping[str, tuple[Verdict, DestinationStats]] | None = None,
) -> Assessment:
    """elsewhere: the names reached in this run (name:port → verdict and stats), to tell
    an AF_INET attempt that lost a Happy Eyeballs race from an IPv4 dependency."""
    reached = stats.connections > stats.failures
    tail = _tail(stats)
    hidden = stats.kind == "ipv4" and bool(set(TUN_FRONT_ENDS) & stats.front_ends)
    if hidden and elsewhere:
        fallback = _happy_eyeballs_fallback(stats, elsewhere)
        if fallback is not None:
            return fallback
    refused = _strict_refused(stats, prefix)
    if refused is not None:
        how = "; reached here through a translator that carries it" if reached else tail
        reason = (
            f"{refused} is not global IPv4: a strict NAT64 refuses it under "
            f"{WELL_KNOWN_PREFIX} (RFC 6052 §3.1), with or without a CLAT{how}"
        )
        return Assessment(stats.destination, Verdict.STRICT_REFUSED, reason, reached)
    if hidden:
        return _hidden_ipv4(stats, reached)
    if _this_host(stats):
        reason = f"this host (loopback, RFC 6761 §6.3): needs no network at all{tail}"
        return Assessment(stats.destination, Verdict.NATIVE, reason, reached)
    if "ipv4-literal-mapped" in stats.reached or stats.kind == "ipv4":
        source = (
            "an IPv4 literal given to the proxy"
            if stats.kind == "ipv4"
            else "a name whose only address is an IPv4-only hosts-file entry"
        )
        reason = f"{source}: no DNS64 can help; works only with a CLAT (464XLAT){tail}"
        return Assessment(stats.destination, Verdict.CLAT, reason, reached)
    if not reached:
        reason = _one_line(stats.last_failure) or "no connection succeeded"
        return Assessment(stats.destination, Verdict.FAILED, reason, False)
    if "native-ipv6" in stats.reached:
        what = "an IPv6 literal" if stats.kind == "ipv6" else "a native AAAA record"
        return Assessment(stats.destination, Verdict.NATIVE, f"{what}{tail}", True)
    reason = (
        "no AAAA record: reached through a synthesized AAAA (DNS64) and NAT64; "
        f"an IPv6-only network without NAT64 cannot reach it{tail}"
    )
    return Assessment(stats.destination, Verdict.NAT64, reason, True)


def assess_all(stats: Iterable[DestinationStats], prefix: IPv6Network | None) -> list[Assessment]:
    nat64 = Nat64Prefix(prefix) if prefix is not None else None
    rows = list(stats)
    first = [assess(s, nat64) for s in rows]
    reached_by_name = {
        a.destination: (a.verdict, s)
        for s, a in zip(rows, first, strict=True)
        if s.kind == "name" and a.reached
    }
    pairs = zip(rows, first, strict=True)
    return [assess(s, nat64, reached_by_name) if s.a_record_of else a for s, a in pairs]


@dataclass(frozen=True, slots=True)
class GateResult:
    level: Level
    broken: tuple[Assessment, ...]  # the destinations that break the level, in report order

    @property
    def passed(self) -> bool:
        return not self.broken


def gate(assessments: Sequence[Assessment], level: Level) -> GateResult:
    return GateResult(level, tuple(a for a in assessments if a.breaks(level)))
