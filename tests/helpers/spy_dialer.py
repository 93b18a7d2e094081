"""The real Dialer (a loopback resolver, no fakes in the dial itself) with a spy: which
entry point a front end used, and every Dialed it gave."""

from __future__ import annotations

from proxy64.destination import Destination, Egress
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.dialer import Dialer
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.hub_fronts import LoopbackResolver


class SpyDialer(Dialer):
    """calls: "connect_now" / "connect" in the order the front end asked; given: every
    Dialed handed out (connect_now, finish_now of a dial in flight, connect)."""

    def __init__(self, prefix: Nat64Prefix) -> None:
        super().__init__(LoopbackResolver(), prefix, Egress.NAT64, connect_timeout=5.0)
        self.calls: list[str] = []
        self.given: list[Dialed] = []

    def connect_now(
        self, destination: Destination, client: str = ""
    ) -> Dialed | PendingDial | None:
        self.calls.append("connect_now")
        answer = super().connect_now(destination, client)
        if isinstance(answer, Dialed):
            self.given.append(answer)
        return answer

    def finish_now(self, pending: PendingDial) -> Dialed:
        dialed = super().finish_now(pending)
        self.given.append(dialed)
        return dialed

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        self.calls.append("connect")
        dialed = await super().connect(destination, client)
        self.given.append(dialed)
        return dialed
