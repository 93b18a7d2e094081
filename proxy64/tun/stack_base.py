"""Shared state and helpers of the TUN stack (proxy64/tun/stack.py): settings, the flow
table, the injected dialer/recorder/relay/responder, task spawning that never lets one
flow's failure stop the others, and the address rules of the TUN network.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal, Protocol

import trio

from proxy64.defaults import (
    CONNECT_TIMEOUT,
    TUN_MAX_FLOWS,
    TUN_MAX_HALF_OPEN,
    TUN_NAME_MEMORY,
    TUN_NETWORK_V4,
    TUN_TCP_RX_BUFFER,
    TUN_TCP_TX_BUFFER,
    TUN_UDP_IDLE,
)
from proxy64.destination import Destination, Reached
from proxy64.errors import AddressMappingError, DialCause, DialError, NotAllowedError
from proxy64.flow import build
from proxy64.flow.names import NameMemory
from proxy64.flow.table import FlowTable
from proxy64.flow.tcp_flow import Refusal, TcpFlow
from proxy64.flow.wire import TCP, Decoder, FlowKey
from proxy64.net.context import ConnectionRecord, RecorderLike, RelayLike
from proxy64.net.dial_types import DialerLike
from proxy64.tun import echo as echo_mod
from proxy64.tun.device import TunDevice
from proxy64.tun.flow_stream import TunTcpStream

logger = logging.getLogger(__name__)

Packet = bytes | memoryview  # one IP packet as read (with vnet: a view past its header)

IPAddress = IPv4Address | IPv6Address

_REFUSAL = {
    DialCause.REFUSED: Refusal.RESET,
    DialCause.NETWORK_UNREACHABLE: Refusal.NO_ROUTE,
    DialCause.HOST_UNREACHABLE: Refusal.ADDRESS_UNREACHABLE,
    DialCause.TIMEOUT: Refusal.ADDRESS_UNREACHABLE,
    DialCause.OTHER: Refusal.ADDRESS_UNREACHABLE,
}


class ResponderLike(Protocol):
    async def respond(self, wire: bytes, *, transport: Literal["udp", "tcp"]) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class StackSettings:
    gateway6: IPv6Address
    network6: IPv6Network
    gateway4: IPv4Address | None  # None: IPv4 from the app is not translated
    mtu: int
    max_flows: int = TUN_MAX_FLOWS
    max_half_open: int = TUN_MAX_HALF_OPEN
    rx_buffer: int = TUN_TCP_RX_BUFFER
    tx_buffer: int = TUN_TCP_TX_BUFFER
    udp_idle: float = TUN_UDP_IDLE
    connect_timeout: float = CONNECT_TIMEOUT
    # Without gateway4: the address (RFC 7335) that answers the app's hidden IPv4 with
    # network unreachable, as an IPv6-only network does, after recording it; None: dropped.
    observe4: IPv4Address | None = None


def refusal_of(exc: BaseException) -> Refusal:
    if isinstance(exc, DialError):
        return _REFUSAL[exc.cause]
    if isinstance(exc, AddressMappingError | NotAllowedError):
        return Refusal.PROHIBITED
    return Refusal.ADDRESS_UNREACHABLE


class StackBase:
    def __init__(
        self,
        device: TunDevice,
        *,
        dialer: DialerLike,
        recorder: RecorderLike,
        relay: RelayLike,
        responder: ResponderLike | None,
        settings: StackSettings,
    ) -> None:
        self.device = device
        self.dialer = dialer
        self.recorder = recorder
        self.relay = relay
        self.responder = responder
        self.settings = settings
        self.decoder = Decoder(2 * settings.max_flows)  # remembers flow keys, bounded
        self.table = FlowTable(max_flows=settings.max_flows, max_half_open=settings.max_half_open)
        self.streams: dict[FlowKey, TunTcpStream] = {}
        self.udp_socks: dict[FlowKey, socket.socket] = {}
        self.udp_scopes: dict[FlowKey, trio.CancelScope] = {}
        self.dns_inflight = 0
        self.echo_kind = echo_mod.probe_kind()
        self._nursery: trio.Nursery | None = None
        self._ack_due: dict[FlowKey, TcpFlow] = {}
        self._corked: dict[FlowKey, TunTcpStream] = {}  # partial tails held by send_all
        self._cork_lot = trio.lowlevel.ParkingLot()
        self.names = NameMemory(TUN_NAME_MEMORY)
        gateway4 = settings.gateway4
        length = TUN_NETWORK_V4.split("/")[1]
        self._network4 = (
            IPv4Network(f"{gateway4}/{length}", strict=False) if gateway4 is not None else None
        )

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """A failing flow task is logged and counted; the other flows keep running."""
        try:
            await fn(*args)
        except Exception:
            logger.exception("TUN flow task %s failed", getattr(fn, "__name__", fn))
            self.table.drop("internal-error")

    def _icmp_error(self, original: Packet | None, refusal_name: str) -> None:
        """Destination unreachable about original, unless RFC 4443 §2.4(e) forbids it."""
        gateway = self._gateway_for(original) if original else None
        error = build.unreachable(original, gateway, refusal_name) if original and gateway else None
        if error is None:
            self.table.drop("icmp-error-not-allowed")
        else:
            self.device.write(error)

    def _gateway_for(self, packet: Packet) -> IPAddress | None:
        if packet[0] >> 4 == 6:
            return self.settings.gateway6
        return self.settings.gateway4

    def _family_allowed(self, key: FlowKey, packet: Packet | None = None, *,
                        opens: bool = False) -> bool:  # fmt: skip
        """opens: the packet would open a flow (a SYN, any UDP datagram): an IPv4 one is
        the app's hidden IPv4 when IPv4 is not translated, recorded and refused."""
        if key.version == 4 and self.settings.gateway4 is None:
            if opens and packet is not None and self.settings.observe4 is not None:
                self._refuse_hidden_ipv4(key, packet)
            else:
                self.table.drop("ipv4-disabled")
            return False
        if key.remote[0].is_multicast:
            self.table.drop("multicast")
            return False
        return True

    def _refuse_hidden_ipv4(self, key: FlowKey, packet: Packet) -> None:
        """An AF_INET socket's first packet: into the report with its address and port,
        then ICMP network unreachable (RFC 792 3/0), which Linux turns into ENETUNREACH
        for a connecting TCP socket, the error an IPv6-only host gives at once."""
        self.table.reject("ipv4-hidden")
        assert self.settings.observe4 is not None
        error = build.unreachable(packet, self.settings.observe4, "NO_ROUTE")
        if error is not None:
            self.device.write(error)
        name = "tun-tcp" if key.protocol == TCP else "tun-udp"
        destination = Destination(key.remote[0], key.remote[1])
        record = ConnectionRecord(name, client=key.app_text, destination=destination)
        record.a_record_of = self.names.name_of(key.remote[0])
        record.outcome = (
            f"AF_INET {name.removeprefix('tun-').upper()} to {key.remote[0]}:{key.remote[1]} "
            "answered network unreachable: no IPv4 on an IPv6-only network"
        )
        self.recorder.finish(record)

    def _name_the_record(self, record: ConnectionRecord, key: FlowKey) -> None:
        """The name the app resolved, when our DNS64 answered it (see flow/names.py).

        An AF_INET flow stays an IPv4 destination (the app needed IPv4 for it, whatever
        name it resolved); the name whose A record it used is noted beside it."""
        name = self.names.name_of(key.remote[0])
        if key.version == 4:
            record.a_record_of = name
            return
        if name is None:
            return
        record.destination = Destination(name, key.remote[1])
        if record.reached is Reached.IPV4_LITERAL:
            record.reached = Reached.DNS64  # the address came from a synthesized AAAA

    def _is_local(self, address: IPAddress) -> bool:
        if isinstance(address, IPv6Address):
            return address in self.settings.network6
        # The app's own IPv4 network (TUN_NETWORK_V4) is on-link: never dialed out.
        return self._network4 is not None and address in self._network4
