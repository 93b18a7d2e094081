"""The shared parts every front end is handed (SOCKS5, HTTP, TUN): built once in app.py.

Front ends never build a dialer or resolver themselves; they receive a ProxyContext.
Protocols here let tests pass fakes (a FakeDialer that returns memory streams).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Protocol

import trio

from proxy64.destination import Destination, Egress, Reached
from proxy64.net.slots import ConnectionSlots

if TYPE_CHECKING:  # dialer.py and auth_gate.py import this module
    from proxy64.net.auth_gate import AuthGate
    from proxy64.net.dialer import PendingDial

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Dialed:
    """A connected outbound TCP stream and how it was reached."""

    stream: trio.abc.HalfCloseableStream
    destination: Destination
    remote: tuple[IPAddress, int]  # the address actually dialed
    local: tuple[IPAddress, int]  # the outbound socket's own address (SOCKS BND.ADDR)
    reached: Reached
    egress: Egress | None  # None: native IPv6, no NAT64 step
    strict_nat64_refuses: bool = False  # a strict NAT64 would refuse it (RFC 6052 §3.1)


@dataclass(frozen=True, slots=True)
class UdpTarget:
    """Where a datagram for a destination goes after resolution and egress rules."""

    destination: Destination
    remote: tuple[IPAddress, int]
    reached: Reached
    egress: Egress | None
    strict_nat64_refuses: bool = False  # as Dialed's


class DialerLike(Protocol):
    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        """Resolve and connect (Happy Eyeballs). Raises ResolutionError,
        AddressMappingError, NotAllowedError or DialError, each carrying its SOCKS reply /
        HTTP status. client: the client's `host:port` as records write it, for the access
        rules' client conditions ("" when unknown)."""
        ...

    def connect_now(
        self, destination: Destination, client: str = ""
    ) -> Dialed | PendingDial | None:
        """connect() without waiting: Dialed when the handshake completed inside
        connect(2) (loopback, local peers), a PendingDial to finish() when it is in flight,
        None when connect() must be awaited (a name not cached, several addresses to race).
        Raises what connect() raises."""
        ...

    async def finish(self, pending: PendingDial) -> Dialed:
        """Wait for a PendingDial's handshake (bounded by the dialer's connect timeout)."""
        ...

    async def udp_target(self, destination: Destination, client: str = "") -> UdpTarget:
        """Resolve a UDP destination by the same rules as connect(); no socket opened."""
        ...


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


class RecorderLike(Protocol):
    def finish(self, record: ConnectionRecord) -> None:
        """Log the record's one info line and add it to the readiness report."""
        ...


class RelayLike(Protocol):
    async def __call__(
        self,
        client: trio.abc.HalfCloseableStream,
        remote: trio.abc.HalfCloseableStream,
        record: ConnectionRecord,
    ) -> None:
        """Copy both ways until both sides are done; half-close kept; counts into record."""
        ...


@dataclass(frozen=True, slots=True)
class ProxyContext:
    """Everything a front end's per-connection handler needs, built once by app.py.

    Front ends expose `async def handle_<proto>_client(stream, ctx) -> None`; app.py owns
    the listeners (so --workers and SO_REUSEPORT live in one place) and calls them.
    """

    dialer: DialerLike
    recorder: RecorderLike
    relay: RelayLike
    credentials: dict[str, str] | None  # username → password; None: no authentication
    handshake_timeout: float
    idle_timeout: float
    connection_slots: ConnectionSlots  # --max-connections, --max-client-connections
    auth_gate: AuthGate | None = None  # holds answers to an address that keeps failing
