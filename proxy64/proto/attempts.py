"""The connection-attempt plan of Happy Eyeballs v2 (RFC 8305), sans I/O.

Given the candidate targets of one destination, the plan says which to try next and when:
- order (RFC 8305 §4): keep the resolver's order (RFC 6724-sorted by DNS), then interleave
  address families, first family first (§4 "First Address Family Count" = 1). Here the
  "families" are what is actually dialed: IPv6, or IPv4 when the embedded egress does the
  NAT64 step itself. A duplicate target is tried once.
- timing (RFC 8305 §5): the first attempt starts at once; each next one starts when the
  Connection Attempt Delay has passed since the previous start, or at once when an
  attempt fails. The first success wins; the caller cancels the others.
The plan is driven with times passed in (`now`), never reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from proxy64.destination import Egress, Reached
from proxy64.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class Target:
    """One address:port to connect to, and how it relates to the requested destination."""

    address: IPv4Address | IPv6Address
    port: int
    reached: Reached
    egress: Egress | None  # None: native IPv6, no NAT64 step


def interleave(targets: Iterable[Target]) -> list[Target]:
    """RFC 8305 §4: drop duplicates, then alternate families starting with the first one."""
    seen: set[tuple[IPv4Address | IPv6Address, int]] = set()
    unique: list[Target] = []
    for target in targets:
        key = (target.address, target.port)
        if key not in seen:
            seen.add(key)
            unique.append(target)
    if not unique:
        return []
    first = unique[0].address.version
    primary = [t for t in unique if t.address.version == first]
    secondary = [t for t in unique if t.address.version != first]
    out: list[Target] = []
    for index in range(max(len(primary), len(secondary))):
        if index < len(primary):
            out.append(primary[index])
        if index < len(secondary):
            out.append(secondary[index])
    return out


class AttemptPlan:
    """When to start which attempt (RFC 8305 §5); fed with start/failure events and times."""

    __slots__ = ("_delay", "_in_flight", "_next", "_next_due", "_order")

    def __init__(self, targets: Sequence[Target], delay: float) -> None:
        if delay < 0:
            raise LocalProtocolError(f"attempt delay must not be negative, got {delay}")
        self._order = interleave(targets)
        self._delay = delay
        self._next = 0
        self._in_flight = 0
        self._next_due: float | None = None  # None: the first attempt may start now

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(self._order)

    @property
    def remaining(self) -> int:
        return len(self._order) - self._next

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def exhausted(self) -> bool:
        """No attempt left to start and none in flight: the dial has failed."""
        return self.remaining == 0 and self._in_flight == 0

    def next_start(self) -> float | None:
        """The time the next attempt is due, None when none is left (or now, if unset)."""
        if self.remaining == 0:
            return None
        return self._next_due

    def start(self, now: float) -> Target:
        """Take the next target; the caller starts its attempt at `now`."""
        if self.remaining == 0:
            raise LocalProtocolError("AttemptPlan.start() called with no target left")
        if self._next_due is not None and now < self._next_due:
            raise LocalProtocolError(
                f"AttemptPlan.start() at {now} before the attempt is due at {self._next_due}"
            )
        target = self._order[self._next]
        self._next += 1
        self._in_flight += 1
        self._next_due = now + self._delay  # RFC 8305 §5 Connection Attempt Delay
        return target

    def failed(self, now: float) -> None:
        """One attempt failed: the next one may start at once (RFC 8305 §5)."""
        if self._in_flight == 0:
            raise LocalProtocolError("AttemptPlan.failed() with no attempt in flight")
        self._in_flight -= 1
        self._next_due = now  # RFC 8305 §5: do not wait out the delay after a failure
