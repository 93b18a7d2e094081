"""The record of one proxied connection: filled in as it progresses, logged once at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy64.destination import Destination, Egress, Reached
from proxy64.net.dial_types import Dialed, IPAddress, UdpTarget


class LiveTunnels:
    """How many records are between reached_by() and the recorder's finish() right now:
    the process's live tunnels, read by the metrics sampler. A process-wide count, as a
    gauge is: every front end makes its records itself, and each ends in finish()."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


live_tunnels = LiveTunnels()


@dataclass(slots=True)
class ConnectionRecord:
    """One proxied connection, filled in as it progresses; logged once at the end."""

    front_end: str  # "socks5", "socks4", "http-connect", "http", "udp", "tun-tcp", "tun-udp"
    client: str
    destination: Destination | None = None
    remote: tuple[IPAddress, int] | None = None
    reached: Reached | None = None
    egress: Egress | None = None
    bytes_up: int = 0  # client → destination
    bytes_down: int = 0  # destination → client
    started: float = field(default_factory=time.monotonic)
    outcome: str = "open"  # "ok", or the error sentence
    # Under 64:ff9b::/96 in a range a strict NAT64 refuses (RFC 6052 §3.1, tayga >= 0.9.4):
    # the readiness report marks it whether or not this network's NAT64 carried it.
    strict_nat64_refuses: bool = False
    # tun: the name whose A record an AF_INET flow went to (from our DNS64's answers)
    a_record_of: str | None = None

    def reached_by(self, path: Dialed | UdpTarget) -> None:
        """What the dialer chose: the address dialed, how it was reached, the egress."""
        if self.remote is None:
            live_tunnels.count += 1  # the recorder's finish() takes it off
        self.remote, self.reached, self.egress = path.remote, path.reached, path.egress
        self.strict_nat64_refuses = path.strict_nat64_refuses

    def failed(self, error: Exception) -> None:
        """The dial failed: the error sentence is the outcome, its readiness mark kept."""
        self.outcome = str(error)
        self.strict_nat64_refuses = getattr(error, "strict_nat64_refuses", False)
