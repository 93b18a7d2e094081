"""Fake sockets for the dialer's socket_factory: connect() sleeps a delay on trio's clock
(a MockClock in the tests of RFC 8305 timings) and then succeeds or fails with an errno,
per destination address; every connect start is recorded with its time.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import trio

from proxy64.destination import Egress
from proxy64.net.dialer import Dialer
from proxy64.policy import DestinationPolicy
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.fakes import FakeResolver

WKP = Nat64Prefix.parse("64:ff9b::/96")
IPAddress = IPv4Address | IPv6Address


@dataclass
class Outcome:
    delay: float
    error: int | None = None  # errno, or None: the connect succeeds


@dataclass
class FakeNet:
    """Fake sockets: connect() sleeps `delay` (mock clock) then succeeds or fails."""

    outcomes: dict[str, Outcome]
    started: list[tuple[float, str]] = field(default_factory=list)
    sockets: list[FakeSocket] = field(default_factory=list)

    def socket(self, family: int, type_: int, proto: int) -> FakeSocket:
        sock = FakeSocket(self, family)
        self.sockets.append(sock)
        return sock


class FakeSocket(trio.socket.SocketType):
    def __init__(self, net: FakeNet, family: int) -> None:
        self.net = net
        self._family = family
        self.closed = False
        self.connected_to: str | None = None

    @property
    def family(self) -> Any:
        return self._family

    @property
    def type(self) -> Any:
        return socket.SOCK_STREAM

    @property
    def proto(self) -> int:
        return 0

    def setsockopt(self, *args: Any) -> None:
        pass

    async def connect(self, address: Any) -> None:
        host = address[0]
        self.net.started.append((trio.current_time(), host))
        outcome = self.net.outcomes[host]
        await trio.sleep(outcome.delay)
        if outcome.error is not None:
            raise OSError(outcome.error, os.strerror(outcome.error))
        self.connected_to = host

    def getsockname(self) -> Any:
        return ("::1", 40000, 0, 0) if self._family == socket.AF_INET6 else ("127.0.0.1", 40000)

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return -1


class FakeHostInfo:
    """/etc/hosts and this host's own addresses, as the dialer's host_info asks for them."""

    def __init__(self, hosts: dict[str, list[str]], own: list[str] = ()) -> None:  # type: ignore[assignment]
        self.hosts = {k: tuple(ip_address(a) for a in v) for k, v in hosts.items()}
        self.own = frozenset(ip_address(a) for a in own)
        self.looked_up: list[str] = []

    def lookup(self, name: str) -> tuple[IPAddress, ...]:
        self.looked_up.append(name)
        return self.hosts.get(name, ())

    def own_addresses(self) -> frozenset[IPAddress]:
        return self.own


def make_dialer(
    net: FakeNet,
    resolver: FakeResolver | None = None,
    *,
    prefix: Any = WKP,
    egress: Egress = Egress.NAT64,
    policy: DestinationPolicy | None = None,
    hosts: FakeHostInfo | None = None,
) -> Dialer:
    """The real Dialer over FakeNet's sockets (under the well-known prefix by default)."""
    return Dialer(
        resolver or FakeResolver({}),
        prefix,
        egress,
        connect_timeout=10.0,
        socket_factory=net.socket,
        policy=policy,
        host_info=hosts,
    )
