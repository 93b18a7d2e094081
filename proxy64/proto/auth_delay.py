"""Slowing password guessing: answers to one address's authentications are held back
while it keeps failing (pure; time is a value passed in).

A burst starts with an address's first failed authentication (RFC 1929 status not 0,
HTTP 407). From then on every answer to that address, success or failure, is held
until a release time: the previous release plus a step that doubles with each failure
in the burst, from `base` up to `cap`. Holding successes too means a client cannot
learn a guess was wrong by not seeing a quick success; spacing releases means parallel
connections gain nothing. The first failure is answered at once (a typo costs nothing).
A burst ends `forget_after` seconds after its last failure. Other addresses are never
affected. At most `max_tracked` addresses are remembered (the oldest burst is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Burst:
    failures: int  # failed authentications in this burst
    last_failure: float
    release_at: float  # no answer to this address leaves before this time


@dataclass(frozen=True, slots=True)
class Held:
    """How long to hold one answer, and whether a burst of failures just began."""

    seconds: float
    burst_started: bool = False
    failures: int = 0  # failures in the burst so far, this one included


class AuthDelay:
    def __init__(
        self, *, base: float, cap: float, forget_after: float, max_tracked: int = 10_000
    ) -> None:
        if not 0 <= base <= cap:
            raise ValueError("0 <= base <= cap is required")
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self.max_tracked = max_tracked
        self._bursts: dict[str, _Burst] = {}  # insertion order: oldest first

    def step(self, failures: int) -> float:
        """The hold added per answer after `failures` failures: 0, base, 2·base, … ≤ cap."""
        if failures <= 0:
            return 0.0
        return min(self.base * 2.0 ** min(failures - 1, 64), self.cap)

    def _live(self, client: str, now: float) -> _Burst | None:
        burst = self._bursts.get(client)
        if burst is not None and now - burst.last_failure > self.forget_after:
            del self._bursts[client]
            return None
        return burst

    def holding(self, client: str, now: float) -> bool:
        """Whether answers to client are held now (a burst of failures is live)."""
        return self._live(client, now) is not None

    def answer(self, client: str, ok: bool, now: float) -> Held:
        """An authentication from client completed at `now` with outcome ok: how long to
        hold its answer. Records the failure."""
        burst = self._live(client, now)
        if burst is None:
            if ok:
                return Held(0.0)
            if len(self._bursts) >= self.max_tracked:
                del self._bursts[next(iter(self._bursts))]
            self._bursts[client] = _Burst(1, now, now)
            return Held(0.0, burst_started=True, failures=1)
        release = max(now, burst.release_at) + self.step(burst.failures)
        burst.release_at = release
        if not ok:
            burst.failures += 1
            burst.last_failure = now
        return Held(release - now, failures=burst.failures)
