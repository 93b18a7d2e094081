"""The record of one proxied connection: filled in as it progresses, logged once at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy64.destination import Destination, Egress, Reached
from proxy64.net.dial_types import Dialed, IPAddress, UdpTarget


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

    def reached_by(self, path: Dialed | UdpTarget) -> None:
        """What the dialer chose: the address dialed, how it was reached, the egress."""
        self.remote, self.reached, self.egress = path.remote, path.reached, path.egress
