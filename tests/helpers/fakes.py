"""Generic stand-ins for the core's resolver, dialer, recorder and relay, for tests.

FakeResolver answers the real Dialer from a table (never from a cache); CachedNameResolver
answers CACHED from its cache and UNCACHED only after an await (both under NSP).

FakeDialer really connects, but only to loopback: a literal 127.0.0.1 / ::1, or a name from
its `names` table (so a test can ask for "origin.p64.test"). An unknown name raises the
ResolutionError (NXDOMAIN) the real dialer would; `failures` maps a name to the typed error
to raise; `hang` names never finish dialing. A destination outside loopback is a test bug
and raises AssertionError before any packet leaves. udp_target() follows the same table.

ListRecorder keeps finished records and fails on a record finished twice. simple_relay
copies both ways with half-close kept and counts bytes into the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

import trio

from proxy64.destination import Destination, Reached
from proxy64.errors import DialAttempt, DialCause, DialError, Proxy64Error, ResolutionError
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial, UdpTarget
from proxy64.net.resolver import Resolution, ResolvedAddress
from proxy64.net.slots import ConnectionSlots
from proxy64.proto.rfc6052 import Nat64Prefix

IPAddress = IPv4Address | IPv6Address


class FakeResolver:
    """A resolver for the real Dialer: `answers` maps a name to (IPv6 address, synthesized)
    pairs; any other name is NXDOMAIN; nothing is cached (connect_now() gives way)."""

    def __init__(self, answers: dict[str, list[tuple[str, bool]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def resolve_cached(self, name: str) -> Resolution | None:
        return None  # nothing cached: connect_now() gives way to connect()

    async def resolve(self, name: str) -> Resolution:
        self.asked.append(name)
        await trio.lowlevel.checkpoint()
        if name not in self.answers:
            raise ResolutionError(name, "NXDOMAIN")
        records = tuple(ResolvedAddress(IPv6Address(a), syn, 60) for a, syn in self.answers[name])
        return Resolution(name, (), records, False)


NSP = Nat64Prefix.parse("2001:db8:64::/96")  # 127.0.0.1 embeds here, dialed as IPv4
CACHED = "cached.p64.test"
UNCACHED = "slow.p64.test"


class CachedNameResolver:
    """CACHED answers from the cache (resolve_cached); UNCACHED only after an await."""

    def __init__(self) -> None:
        self.resolved: list[str] = []

    def _resolution(self, name: str) -> Resolution:
        if name not in (CACHED, UNCACHED):
            raise ResolutionError(name, "NXDOMAIN")
        record = ResolvedAddress(NSP.embed(IPv4Address("127.0.0.1")), True, 60)
        return Resolution(name, (), (record,), name == CACHED)

    def resolve_cached(self, name: str) -> Resolution | None:
        return self._resolution(name) if name == CACHED else None

    async def resolve(self, name: str) -> Resolution:
        self.resolved.append(name)
        await trio.sleep(0.01)
        return self._resolution(name)


class DialsThroughConnect:
    """The dialer interface's in-flight half for a fake that always dials through connect()
    (as the real dialer does for an uncached name): no PendingDial is ever handed out."""

    def connect_now(self, destination: Destination, client: str = "") -> None:
        return None

    async def finish(self, pending: PendingDial) -> Dialed:
        raise AssertionError(f"{type(self).__name__}.connect_now never returns a PendingDial")

    def finish_now(self, pending: PendingDial) -> Dialed:
        raise AssertionError(f"{type(self).__name__}.connect_now never returns a PendingDial")

    def abandon(self, pending: PendingDial) -> DialError:
        raise AssertionError(f"{type(self).__name__}.connect_now never returns a PendingDial")


@dataclass
class FakeDialer(DialsThroughConnect):
    names: dict[str, IPAddress] = field(default_factory=dict)
    failures: dict[str, Callable[[Destination], Proxy64Error]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    dialed: list[Destination] = field(default_factory=list)
    udp_asked: list[Destination] = field(default_factory=list)

    def _address(self, destination: Destination) -> IPAddress:
        host = destination.host
        if isinstance(host, str):
            if host in self.failures:
                raise self.failures[host](destination)
            if host not in self.names:
                raise ResolutionError(host, "NXDOMAIN")
            address = self.names[host]
        else:
            address = host
        if not address.is_loopback:
            raise AssertionError(f"a test tried to reach {address}, outside loopback")
        return address

    @staticmethod
    def _reached(destination: Destination, address: IPAddress) -> Reached:
        if isinstance(destination.host, str):
            return Reached.NATIVE_IPV6 if address.version == 6 else Reached.DNS64
        return Reached.NATIVE_IPV6 if address.version == 6 else Reached.IPV4_LITERAL

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        self.dialed.append(destination)
        if isinstance(destination.host, str) and destination.host in self.hang:
            await trio.sleep_forever()
        address = self._address(destination)
        try:
            stream = await trio.open_tcp_stream(str(address), destination.port)
        except OSError as exc:
            attempt = DialAttempt(address, destination.port, DialCause.REFUSED, str(exc))
            raise DialError(str(destination), [attempt]) from None
        local = stream.socket.getsockname()
        return Dialed(
            stream=stream,
            destination=destination,
            remote=(address, destination.port),
            local=(ip_address(local[0]), local[1]),
            reached=self._reached(destination, address),
            egress=None,
        )

    async def udp_target(self, destination: Destination, client: str = "") -> UdpTarget:
        self.udp_asked.append(destination)
        address = self._address(destination)
        return UdpTarget(
            destination=destination,
            remote=(address, destination.port),
            reached=self._reached(destination, address),
            egress=None,
        )


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
        """The records once `count` connections have finished (handlers end after clients);
        callers bound the wait with trio.fail_after."""
        while len(self.records) < count:
            await self._changed.wait()
        return self.records


async def _copy(
    source: trio.abc.ReceiveStream,
    sink: trio.abc.HalfCloseableStream,
    record: ConnectionRecord,
    *,
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


async def simple_relay(
    client: trio.abc.HalfCloseableStream,
    remote: trio.abc.HalfCloseableStream,
    record: ConnectionRecord,
) -> None:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _copy(client, remote, record, up=True))
            nursery.start_soon(lambda: _copy(remote, client, record, up=False))
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(remote)


def make_context(
    dialer: FakeDialer,
    recorder: ListRecorder,
    *,
    credentials: dict[str, str] | None = None,
    handshake_timeout: float = 5.0,
    max_connections: int = 100,
) -> ProxyContext:
    return ProxyContext(
        dialer=dialer,
        recorder=recorder,
        relay=simple_relay,
        credentials=credentials,
        handshake_timeout=handshake_timeout,
        idle_timeout=30.0,
        connection_slots=ConnectionSlots(max_connections),
    )


def blank_record() -> ConnectionRecord:
    """A record for a relay driven directly, without a front end."""
    return ConnectionRecord(front_end="test", client="127.0.0.1:1")
