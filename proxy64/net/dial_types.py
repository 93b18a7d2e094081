"""The dialer's interface: what a front end asks of the one dialer, and what it gets back.

Front ends, the TUN stack and tests depend on this module only; the implementation
(proxy64/net/dialer.py) and its resolver are built by the composition root (app.py) and
handed down in a ProxyContext. Protocols here let tests pass fakes (a FakeDialer that
returns memory streams).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

import trio

from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import DialError
from proxy64.proto.attempts import Target

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


@dataclass(frozen=True, slots=True)
class PendingDial:
    """connect_now()'s answer when the one handshake is still in flight: finish() it."""

    destination: Destination
    target: Target
    sock: socket.socket  # non-blocking, connect() started
    deadline: float  # trio time: connect_timeout after the dial started


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

    def finish_now(self, pending: PendingDial) -> Dialed:
        """finish() without waiting, once the PendingDial's socket is writable: its
        Dialed, or connect()'s error."""
        ...

    def abandon(self, pending: PendingDial) -> DialError:
        """Close a PendingDial whose deadline passed; the timeout error finish() raises."""
        ...

    async def udp_target(self, destination: Destination, client: str = "") -> UdpTarget:
        """Resolve a UDP destination by the same rules as connect(); no socket opened."""
        ...


class ResolvedLike(Protocol):
    @property
    def address(self) -> IPv6Address: ...
    @property
    def synthesized(self) -> bool: ...


class ResolutionLike(Protocol):
    @property
    def records(self) -> Sequence[ResolvedLike]: ...


class ResolverLike(Protocol):
    async def resolve(self, name: str) -> ResolutionLike:
        """IPv6 addresses for a name (DNS64); raises ResolutionError."""
        ...

    def resolve_cached(self, name: str) -> ResolutionLike | None:
        """resolve()'s answer when cached (a cached failure raises), None otherwise;
        never waits."""
        ...


class HostInfoLike(Protocol):
    def lookup(self, name: str) -> tuple[IPv4Address | IPv6Address, ...]:
        """The addresses /etc/hosts gives name; () when it lists none. Never waits."""
        ...

    def own_addresses(self) -> frozenset[IPv4Address | IPv6Address]:
        """This host's own addresses. Never waits."""
        ...
