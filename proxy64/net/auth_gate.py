"""The authentication delay (proxy64/proto/auth_delay.py) on trio's clock, for the front
ends: `answer` tells how long to hold one answer and logs once per burst of failures;
`auth_hold` hands a session machine (SOCKS RFC 1929, HTTP Basic) the hold of its client's
answers, which the machine turns into a deadline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from proxy64.net.slots import client_host
from proxy64.proto.auth_delay import AuthDelay

logger = logging.getLogger(__name__)


class AuthGate:
    """One per process: the policy, the clock and the burst log line."""

    def __init__(self, policy: AuthDelay, clock: Callable[[], float] = trio.current_time) -> None:
        self.policy = policy
        self._clock = clock

    def holding(self, client: str) -> bool:
        """Whether client's ("host:port") answers are held now."""
        return self.policy.holding(client_host(client), self._clock())

    def answer(self, client: str, ok: bool) -> float:
        """Seconds to hold the answer to client's authentication that just completed."""
        held = self.policy.answer(client_host(client), ok, self._clock())
        if held.burst_started:
            logger.warning(
                "authentication failed from %s: its further answers are held back, "
                "%g s more per failure up to %g s, until it stops failing for %g s",
                client_host(client),
                self.policy.base,
                self.policy.cap,
                self.policy.forget_after,
            )
        return held.seconds

    def for_client(self, client: str) -> Callable[[bool], float]:
        """answer() bound to one client (what the SOCKS handshake step takes)."""
        return lambda ok: self.answer(client, ok)


class Gated(Protocol):
    """What the helpers below read of a front end's context (ProxyContext has it)."""

    @property
    def auth_gate(self) -> AuthGate | None: ...


def auth_hold(ctx: Gated, client: str) -> Callable[[bool], float] | None:
    """The SOCKS handshake step's hold for client's RFC 1929 answer (None: no gate)."""
    return ctx.auth_gate.for_client(client) if ctx.auth_gate is not None else None
