"""Stand-ins for the core's dialer, relay and recorder, for the HTTP front end's tests.

LoopbackDialer really connects, but only to loopback: literal 127.0.0.1 / ::1, or a name
from its table. Names in its `failures` table raise the typed error the real dialer would.
copy_relay copies both ways with half-close kept. ListRecorder keeps finished records.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

import trio

from proxy64.destination import Destination, Reached
from proxy64.errors import DialAttempt, DialCause, DialError, Proxy64Error
from proxy64.net.context import ConnectionRecord, Dialed, ProxyContext, UdpTarget

IPAddress = IPv4Address | IPv6Address


@dataclass
class LoopbackDialer:
    names: dict[str, IPAddress] = field(default_factory=dict)
    failures: dict[str, Callable[[Destination], Proxy64Error]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)  # names whose dial never returns
    dialed: list[Destination] = field(default_factory=list)

    def _address(self, destination: Destination) -> IPAddress:
        host = destination.host
        if isinstance(host, str):
            if host in self.failures:
                raise self.failures[host](destination)
            return self.names[host]
        return host

    async def connect(self, destination: Destination) -> Dialed:
        self.dialed.append(destination)
        if isinstance(destination.host, str) and destination.host in self.hang:
            await trio.sleep_forever()
        address = self._address(destination)
        if not address.is_loopback:
            raise AssertionError(f"test tried to dial {address}, outside loopback")
        family = trio.socket.AF_INET6 if address.version == 6 else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            await sock.connect((str(address), destination.port))
        except OSError as exc:
            sock.close()
            refused = exc.errno == errno.ECONNREFUSED
            cause = DialCause.REFUSED if refused else DialCause.OTHER
            attempt = DialAttempt(address, destination.port, cause, str(exc))
            raise DialError(str(destination), [attempt]) from None
        stream = trio.SocketStream(sock)
        local = stream.socket.getsockname()
        return Dialed(
            stream=stream,
            destination=destination,
            remote=(address, destination.port),
            local=(ip_address(local[0]), local[1]),
            reached=Reached.NATIVE_IPV6 if address.version == 6 else Reached.IPV4_LITERAL,
            egress=None,
        )

    async def udp_target(self, destination: Destination) -> UdpTarget:
        raise NotImplementedError("the HTTP front end never asks for UDP")


@dataclass
class ListRecorder:
    records: list[ConnectionRecord] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def finish(self, record: ConnectionRecord) -> None:
        if any(r is record for r in self.records):
            raise AssertionError(f"record finished twice: {record}")
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[ConnectionRecord]:
        """The records once `count` are in (a tunnel's record comes after its client left)."""
        while len(self.records) < count:
            await self._changed.wait()
        return self.records


async def _copy(
    source: trio.abc.ReceiveStream,
    sink: trio.abc.HalfCloseableStream,
    record: ConnectionRecord,
    up: bool,
) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
            if up:
                record.bytes_up += len(data)
            else:
                record.bytes_down += len(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def copy_relay(
    client: trio.abc.HalfCloseableStream,
    remote: trio.abc.HalfCloseableStream,
    record: ConnectionRecord,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_copy, client, remote, record, True)
        nursery.start_soon(_copy, remote, client, record, False)


def make_context(
    dialer: LoopbackDialer | None = None,
    *,
    credentials: dict[str, str] | None = None,
    handshake_timeout: float = 5.0,
    idle_timeout: float = 10.0,
    max_connections: int = 64,
) -> tuple[ProxyContext, ListRecorder]:
    recorder = ListRecorder()
    ctx = ProxyContext(
        dialer=dialer or LoopbackDialer(),
        recorder=recorder,
        relay=copy_relay,
        credentials=credentials,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        connection_slots=trio.CapacityLimiter(max_connections),
    )
    return ctx, recorder
