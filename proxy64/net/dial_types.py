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


class Dialed:
    """A connected outbound TCP connection and how it was reached.

    The dialer's own connections carry their connected socket (`sock`: non-blocking,
    TCP_NODELAY set), whose fd the executor's hub paths read and write; the trio stream a
    task needs (`stream`: a bulk body, the relay after promotion, a relay the hub cannot
    carry, the TUN stack) is made from it on first use. A connection that never meets a
    task so costs no trio wrapper: no ioctl, setsockopt or socket type conversion to make
    one, and a plain close. Dials through a socket factory, and tests' fakes, give the
    stream they made (`sock` is then a SocketStream's socket, or None when the stream is
    not a socket). `local` (SOCKS BND.ADDR) is read from the socket when first asked for.
    """

    __slots__ = (
        "_local",
        "_stream",
        "destination",
        "egress",
        "reached",
        "remote",
        "sock",
        "strict_nat64_refuses",
    )

    def __init__(
        self,
        *,
        destination: Destination,
        remote: tuple[IPAddress, int],
        reached: Reached,
        egress: Egress | None,
        strict_nat64_refuses: bool = False,
        sock: socket.socket | None = None,
        stream: trio.abc.HalfCloseableStream | None = None,
        local: tuple[IPAddress, int] | None = None,
    ) -> None:
        """sock: the dialer's connected socket; or stream: the one a socket factory or a
        fake made. local: known already (fakes); else read from the socket when asked."""
        self.destination = destination
        self.remote = remote  # the address actually dialed
        self.reached = reached
        self.egress = egress  # None: native IPv6, no NAT64 step
        # a strict NAT64 would refuse it (RFC 6052 §3.1)
        self.strict_nat64_refuses = strict_nat64_refuses
        self._stream = stream
        self._local = local
        # the socket the hub paths use (fileno, shutdown); None: not a socket (memory stream)
        self.sock: socket.socket | trio.socket.SocketType | None = sock
        if sock is None and isinstance(stream, trio.SocketStream):
            self.sock = stream.socket

    @property
    def stream(self) -> trio.abc.HalfCloseableStream:
        """The connection as a trio stream (made on first use from the dialer's socket:
        trio's socket object over the same fd, nothing buffered in between)."""
        stream = self._stream
        if stream is None:
            sock = self.sock
            assert isinstance(sock, socket.socket), "a Dialed has a socket or a stream"
            stream = self._stream = stream_over(sock)
        return stream

    @property
    def has_stream(self) -> bool:
        """Whether a trio stream exists (made or given): close() then goes through trio."""
        return self._stream is not None

    @property
    def local(self) -> tuple[IPAddress, int]:
        """The outbound socket's own address (SOCKS BND.ADDR, RFC 1928 §6): one
        getsockname on the first ask, only by a protocol that answers with it."""
        local = self._local
        if local is None:
            sock = self.sock
            assert sock is not None, "a Dialed without a socket is given its local address"
            host, port = sock.getsockname()[:2]
            local = self._local = (_ip(host), int(port))
        return local

    def close(self) -> None:
        """Close the socket, once (close_socket: through trio when a trio stream exists,
        else a plain close). A stream that is not a socket (a test's
        memory stream) is its maker's to close."""
        stream = self._stream
        if self.sock is not None and (stream is None or isinstance(stream, trio.SocketStream)):
            close_socket(self.sock, stream)

    def __repr__(self) -> str:
        return f"Dialed({self.destination} via {self.remote[0]}:{self.remote[1]})"


# A socket the relay hub reads and writes on its fd (a dialed connection, and a client
# too: net/executor_client.py), and the trio stream a task needs of it, made only then.


def stream_over(sock: socket.socket) -> trio.SocketStream:
    """trio's stream over sock: the same fd, nothing buffered in between."""
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def close_socket(
    sock: socket.socket | trio.socket.SocketType, stream: trio.SocketStream | None
) -> None:
    """Close sock, once (synchronous): through trio when a stream was made over it (a task
    may wait on the fd: trio wakes it); else a plain close(2). Only the hub paths use a
    socket no stream wraps, and the kernel drops its fd from every epoll set itself,
    where trio's notify_closing would add an epoll_ctl (one that fails when trio never
    waited on the fd)."""
    if stream is not None:
        stream.socket.close()
    else:
        sock.close()


def _ip(text: str) -> IPAddress:
    """getsockname()'s text → address, parsed by the C inet_pton (cheaper than ipaddress)."""
    if ":" in text:
        return IPv6Address(socket.inet_pton(socket.AF_INET6, text.split("%", maxsplit=1)[0]))
    return IPv4Address(socket.inet_pton(socket.AF_INET, text))


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
