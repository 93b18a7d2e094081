"""The NAT64 prefix and egress in use now, shared by the resolver and the dialer.

One Nat64State is built by the composition root and handed to the DNS64 resolver and the
dialer; the watcher (proxy64/net/nat64_watch.py) replaces its choice when the network's
prefix changes. Readers take `state.prefix` once per lookup or dial, so a connection
uses one prefix from start to end and the next connection uses the new one; a tunnel
already dialed keeps its address. Every change is logged in one line, and listeners
(the resolver's cache flush) run before the new prefix is visible to anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from proxy64.destination import Egress
from proxy64.proto.rfc6052 import Nat64Prefix

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Nat64Choice:
    """The prefix and egress chosen, why (shown in the start-up line) and until when.

    expires: time.monotonic() seconds (CLOCK_MONOTONIC, the same in every process forked
    from this one) after which the source must be asked again; None: never (given).
    source: "given", "pref64", "networkd", "rfc7050", "none" or "embedded".
    """

    prefix: Nat64Prefix
    egress: Egress
    why: str
    expires: float | None = None
    source: str = "given"


class Nat64State:
    """Holder of the current Nat64Choice; `prefix` and `egress` read it."""

    __slots__ = ("_choice", "_listeners", "generation")

    def __init__(self, choice: Nat64Choice) -> None:
        self._choice = choice
        self._listeners: list[Callable[[Nat64Choice, Nat64Choice], None]] = []
        self.generation = 0  # bumped on every change of prefix or egress

    @classmethod
    def fixed(cls, prefix: Nat64Prefix, egress: Egress = Egress.NAT64) -> Nat64State:
        return cls(Nat64Choice(prefix, egress, "given"))

    @property
    def choice(self) -> Nat64Choice:
        return self._choice

    @property
    def prefix(self) -> Nat64Prefix:
        return self._choice.prefix

    @property
    def egress(self) -> Egress:
        return self._choice.egress

    def on_change(self, listener: Callable[[Nat64Choice, Nat64Choice], None]) -> None:
        """listener(old, new) runs on every change, before readers see the new choice."""
        self._listeners.append(listener)

    def update(self, choice: Nat64Choice) -> bool:
        """Take a new choice; True (and one log line) when prefix or egress changed."""
        old = self._choice
        if (old.prefix, old.egress) == (choice.prefix, choice.egress):
            self._choice = choice  # same prefix, new expiry or wording
            return False
        for listener in self._listeners:
            listener(old, choice)
        self._choice = choice
        self.generation += 1
        logger.warning(
            "NAT64 prefix changed: %s (egress %s) -> %s (%s), egress %s; new connections "
            "use it, open ones keep theirs",
            old.prefix, old.egress.value, choice.prefix, choice.why, choice.egress.value,
        )  # fmt: skip
        return True
