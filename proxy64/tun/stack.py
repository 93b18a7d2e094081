"""The TUN packet loop: read packets, feed the flow machines, carry out their actions.

A thin loop (STYLE 5): parsing is proxy64/flow/wire.py (over the packet codec), TCP and
UDP rules are the machines in proxy64/flow, the bounded table decides admission. Here:
dial through the one dialer (connect / udp_target), run the relay on each TCP flow as a
stream, answer DNS sent to the gateway with the DNS64 responder (UDP and TCP port 53),
ping through the egress, and write the packets the machines ask for. Reads are batched
per wakeup; nothing a packet contains can stop the loop (decode never raises, machine
errors are counted and the flow reset).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal, Protocol

import trio

from proxy64.defaults import (
    CONNECT_TIMEOUT,
    DNS_PORT,
    TUN_MAX_FLOWS,
    TUN_MAX_HALF_OPEN,
    TUN_NAME_MEMORY,
    TUN_NETWORK_V4,
    TUN_TCP_MAX_RETRIES,
    TUN_TCP_RX_BUFFER,
    TUN_TCP_TX_BUFFER,
    TUN_UDP_IDLE,
    TUN_UDP_QUEUE,
    UDP_MAX_DATAGRAM,
)
from proxy64.destination import Destination, Reached
from proxy64.errors import AddressMappingError, DialCause, DialError, Proxy64Error
from proxy64.flow import build
from proxy64.flow.names import NameMemory
from proxy64.flow.segment import Segment
from proxy64.flow.table import FlowTable, Ignore, Refuse
from proxy64.flow.tcp_flow import (
    AckLater,
    Action,
    Closed,
    Dial,
    DialFailed,
    DialSucceeded,
    Drop,
    PathMtu,
    Readable,
    Refusal,
    Reject,
    SegmentArrived,
    TcpFlow,
    TcpSettings,
    Tick,
    Transmit,
    Writable,
)
from proxy64.flow.udp_flow import Deliver, Open, SendOut, UdpAction, UdpClosed, UdpDrop, UdpFlow
from proxy64.flow.udp_flow import Unreachable as UdpUnreachable
from proxy64.flow.wire import EchoIn, FlowKey, Ignored, Malformed, TcpIn, TooBig, UdpIn, decode
from proxy64.net.context import ConnectionRecord, DialerLike, RecorderLike, RelayLike
from proxy64.tun import echo as echo_mod
from proxy64.tun.device import TunDevice
from proxy64.tun.flow_stream import TunTcpStream

logger = logging.getLogger(__name__)

TIMER_TICK = 0.05  # seconds between retransmission-timer scans
UDP_TICK = 1.0
DNS_INFLIGHT = 256  # DNS queries from the app answered at once; beyond, dropped (counted)
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
    gateway4: IPv4Address | None  # None: IPv4 from the app is dropped
    mtu: int
    max_flows: int = TUN_MAX_FLOWS
    max_half_open: int = TUN_MAX_HALF_OPEN
    rx_buffer: int = TUN_TCP_RX_BUFFER
    tx_buffer: int = TUN_TCP_TX_BUFFER
    udp_idle: float = TUN_UDP_IDLE
    connect_timeout: float = CONNECT_TIMEOUT


def refusal_of(exc: BaseException) -> Refusal:
    if isinstance(exc, DialError):
        return _REFUSAL[exc.cause]
    if isinstance(exc, AddressMappingError):
        return Refusal.PROHIBITED
    return Refusal.ADDRESS_UNREACHABLE


class TunStack:
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
        self.table = FlowTable(max_flows=settings.max_flows, max_half_open=settings.max_half_open)
        self.streams: dict[FlowKey, TunTcpStream] = {}
        self.udp_socks: dict[FlowKey, socket.socket] = {}
        self.udp_scopes: dict[FlowKey, trio.CancelScope] = {}
        self.dns_inflight = 0
        self.echo_kind = echo_mod.probe_kind()
        self._nursery: trio.Nursery | None = None
        self._ack_due: dict[FlowKey, TcpFlow] = {}
        self.names = NameMemory(TUN_NAME_MEMORY)
        gateway4 = settings.gateway4
        length = TUN_NETWORK_V4.split("/")[1]
        self._network4 = (
            IPv4Network(f"{gateway4}/{length}", strict=False) if gateway4 is not None else None
        )

    # --- the loop --------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timers)
                task_status.started()
                while True:
                    for packet, trusted in await self.device.read_batch():
                        try:
                            self.on_packet(packet, trusted=trusted)
                        except Exception:  # a bug must cost one packet, not the stack
                            logger.exception("TUN packet handling failed; packet dropped")
                            self.table.drop("internal-error")
                    self._flush_acks()
        finally:
            for sock in self.udp_socks.values():
                sock.close()
            self.udp_socks.clear()

    def _flush_acks(self) -> None:
        """One ACK per flow per read batch (the machines asked with AckLater)."""
        due, self._ack_due = self._ack_due, {}
        for key, flow in due.items():
            self.execute(key, flow, flow.flush_ack())

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

    def on_packet(self, packet: bytes, *, trusted: bool = False) -> None:
        """trusted: the kernel vouched for the checksums (virtio_net_hdr flags)."""
        inbound = decode(packet, verify=not trusted)
        if isinstance(inbound, TcpIn):
            self._on_tcp(inbound, packet)
        elif isinstance(inbound, UdpIn):
            self._on_udp(inbound, packet)
        elif isinstance(inbound, EchoIn):
            self._on_echo(inbound)
        elif isinstance(inbound, TooBig):
            self._on_too_big(inbound)
        elif isinstance(inbound, Ignored):
            self.table.drop(inbound.reason)
        else:
            self._on_malformed(inbound, packet)

    def _on_malformed(self, inbound: Malformed, packet: bytes) -> None:
        gateway = self._gateway_for(packet) if packet else None
        error = build.reassembly_refused(packet, gateway) if inbound.fragment and gateway else None
        if error is not None:
            self.table.reject(inbound.reason)  # RFC 4443 §3.3: reassembly refused
            self.device.write(error)
        else:
            self.table.drop(inbound.reason)

    def _write_tcp(self, key: FlowKey, segment: Segment, mss: int = 0) -> None:
        if self.device.vnet:  # the checksum is left to the kernel (CHECKSUM_PARTIAL)
            packet, start = build.tcp_packet_partial(key, segment)
            gso = mss if len(segment.payload) > mss > 0 else 0  # a super-segment: GSO
            self.device.write(packet, start, build.TCP_CHECKSUM_OFFSET, gso)
        else:
            self.device.write(build.tcp_packet(key, segment))

    def _icmp_error(self, original: bytes | None, refusal_name: str) -> None:
        """Destination unreachable about original, unless RFC 4443 §2.4(e) forbids it."""
        gateway = self._gateway_for(original) if original else None
        error = build.unreachable(original, gateway, refusal_name) if original and gateway else None
        if error is None:
            self.table.drop("icmp-error-not-allowed")
        else:
            self.device.write(error)

    def _gateway_for(self, packet: bytes) -> IPAddress | None:
        if packet[0] >> 4 == 6:
            return self.settings.gateway6
        return self.settings.gateway4

    def _family_allowed(self, key: FlowKey) -> bool:
        if key.version == 4 and self.settings.gateway4 is None:
            self.table.drop("ipv4-disabled")
            return False
        if key.remote[0].is_multicast:
            self.table.drop("multicast")
            return False
        return True

    # --- TCP -------------------------------------------------------------------------------
    def _on_tcp(self, inbound: TcpIn, packet: bytes) -> None:
        key, seg = inbound.key, inbound.segment
        if not self._family_allowed(key):
            return
        verdict = self.table.tcp_segment(key, seg)
        if isinstance(verdict, Refuse):
            self._write_tcp(key, verdict.reset)
            return
        if isinstance(verdict, Ignore):
            return
        now = trio.current_time()
        if verdict is None:
            flow = self.table.add_tcp(key, seg, int.from_bytes(os.urandom(4)), self._tcp_settings(
                key), now)  # fmt: skip
            self._spawn(self._dial_tcp, key, flow, packet)
            return
        self.execute(key, verdict, verdict.handle(SegmentArrived(seg), now))

    def _tcp_settings(self, key: FlowKey) -> TcpSettings:
        headers = 40 + 20 if key.version == 6 else 20 + 20
        return TcpSettings(
            mss=self.settings.mtu - headers,
            rx_capacity=self.settings.rx_buffer,
            tx_capacity=self.settings.tx_buffer,
            max_retries=TUN_TCP_MAX_RETRIES,
            tso=self.device.vnet,
        )

    def execute(
        self, key: FlowKey, flow: TcpFlow, actions: list[Action], original: bytes | None = None
    ) -> None:
        stream = self.streams.get(key)
        for action in actions:
            if isinstance(action, Transmit):
                self._write_tcp(key, action.segment, flow.snd_mss)
            elif isinstance(action, Readable | Writable):
                if stream is not None and stream.flow is flow:
                    stream.wake()
            elif isinstance(action, AckLater):
                self._ack_due[key] = flow
            elif isinstance(action, Drop):
                self.table.drop(action.reason)
            elif isinstance(action, Reject):
                self.table.reject(f"tcp-{action.refusal.name.lower()}")
                self._icmp_error(original, action.refusal.name)
            elif isinstance(action, Closed):
                if stream is not None and stream.flow is flow:
                    stream.wake()
                    del self.streams[key]
            elif isinstance(action, Dial):
                pass  # dialing starts with the flow (see _on_tcp)
        if self.table.tcp.get(key) is flow:
            self.table.settle_tcp(key)

    async def _dial_tcp(self, key: FlowKey, flow: TcpFlow, syn_packet: bytes) -> None:
        try:
            await self._dial_and_relay(key, flow, syn_packet)
        except Exception:
            self.execute(key, flow, flow.abort("internal error in proxy64 (see its log)"))
            raise

    async def _dial_and_relay(self, key: FlowKey, flow: TcpFlow, syn_packet: bytes) -> None:
        destination = Destination(key.remote[0], key.remote[1])
        record = ConnectionRecord(
            "tun-tcp", client=f"[{key.app[0]}]:{key.app[1]}", destination=destination
        )
        if self._is_local(key.remote[0]):
            await self._local_tcp(key, flow, syn_packet, record)
            return
        try:
            with trio.fail_after(self.settings.connect_timeout + 1):
                dialed = await self.dialer.connect(destination)
        except (Proxy64Error, trio.TooSlowError, OSError) as exc:
            refusal = Refusal.ADDRESS_UNREACHABLE if isinstance(exc, trio.TooSlowError) else (
                refusal_of(exc))  # fmt: skip
            record.outcome = str(exc) or "timed out"
            if refusal is Refusal.RESET:
                self.table.reject("tcp-reset")  # the others are counted with their ICMP
            self.execute(key, flow, flow.handle(DialFailed(refusal, record.outcome),
                                                trio.current_time()), syn_packet)  # fmt: skip
            self.recorder.finish(record)
            return
        record.remote, record.reached, record.egress = dialed.remote, dialed.reached, dialed.egress
        self._name_the_record(record, key)
        stream = TunTcpStream(self, key, flow)
        self.streams[key] = stream
        self.execute(key, flow, flow.handle(DialSucceeded(), trio.current_time()))
        try:
            await self.relay(stream, dialed.stream, record)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(dialed.stream)
                await stream.aclose()
            self.recorder.finish(record)

    def _name_the_record(self, record: ConnectionRecord, key: FlowKey) -> None:
        """The name the app resolved, when our DNS64 answered it (see flow/names.py)."""
        name = self.names.name_of(key.remote[0])
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

    async def _local_tcp(
        self, key: FlowKey, flow: TcpFlow, syn_packet: bytes, record: ConnectionRecord
    ) -> None:
        """Connections to the TUN network itself: DNS over TCP on the gateway, else refused."""
        now = trio.current_time()
        is_dns = key.remote == (self.settings.gateway6, DNS_PORT) and self.responder is not None
        if not is_dns:
            gateway = key.remote[0] in (self.settings.gateway6, self.settings.gateway4)
            refusal = Refusal.RESET if gateway else Refusal.ADDRESS_UNREACHABLE
            self.execute(key, flow, flow.handle(DialFailed(refusal, refusal.value), now),
                         syn_packet)  # fmt: skip
            return
        stream = TunTcpStream(self, key, flow)
        self.streams[key] = stream
        self.execute(key, flow, flow.handle(DialSucceeded(), now))
        try:
            with trio.move_on_after(30):
                await self._dns_tcp_session(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _dns_tcp_session(self, stream: TunTcpStream) -> None:
        """RFC 7766 §8: two-byte length, message; several queries per connection."""
        assert self.responder is not None
        buffer = bytearray()
        while True:
            while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2]):
                chunk = await stream.receive_some()
                if not chunk:
                    await stream.send_eof()
                    return
                buffer += chunk
            size = int.from_bytes(buffer[:2])
            query = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            reply = await self.responder.respond(query, transport="tcp")
            if reply is not None:
                self.names.learn(reply)
            if reply is not None:
                await stream.send_all(len(reply).to_bytes(2) + reply)

    def _on_too_big(self, inbound: TooBig) -> None:
        flow = self.table.tcp.get(inbound.key)
        if flow is None:
            self.table.drop("packet-too-big-no-flow")
            return
        headers = 60 if inbound.key.version == 6 else 40
        self.execute(inbound.key, flow, flow.handle(PathMtu(inbound.mtu - headers),
                                                    trio.current_time()))  # fmt: skip

    # --- timers ----------------------------------------------------------------------------
    async def _timers(self) -> None:
        next_udp = trio.current_time() + UDP_TICK
        while True:
            await trio.sleep(TIMER_TICK)
            now = trio.current_time()
            for key, flow in list(self.table.tcp.items()):
                deadline = flow.deadline
                if deadline is not None and deadline <= now:
                    self.execute(key, flow, flow.handle(Tick(), now))
            if now >= next_udp:
                next_udp = now + UDP_TICK
                for key, uflow in list(self.table.udp.items()):
                    self._udp_execute(key, uflow, uflow.tick(now), None)

    # --- UDP -------------------------------------------------------------------------------
    def _on_udp(self, inbound: UdpIn, packet: bytes) -> None:
        key = inbound.key
        if not self._family_allowed(key):
            return
        if self._is_local(key.remote[0]):
            if key.remote == (self.settings.gateway6, DNS_PORT) and self.responder is not None:
                self._dns_udp(key, inbound.payload)
            else:
                self.table.reject("udp-local-port")
                self._icmp_error(packet, "PORT_UNREACHABLE")
            return
        now = trio.current_time()
        admitted = self.table.udp_admit(key)
        if isinstance(admitted, Ignore):
            return
        if admitted is None:
            flow = UdpFlow(now, idle=self.settings.udp_idle, queue_limit=TUN_UDP_QUEUE)
            self.table.add_udp(key, flow)
            self._udp_execute(key, flow, flow.start(inbound.payload), packet)
        else:
            self._udp_execute(key, admitted, admitted.from_app(inbound.payload, now), packet)

    def _udp_execute(
        self, key: FlowKey, flow: UdpFlow, actions: list[UdpAction], original: bytes | None
    ) -> None:
        for action in actions:
            if isinstance(action, SendOut):
                sock = self.udp_socks.get(key)
                try:
                    if sock is not None:
                        sock.send(action.payload)
                except BlockingIOError:
                    self.table.drop("udp-send-buffer-full")
                except OSError:
                    self.table.drop("udp-send-failed")
            elif isinstance(action, Deliver):
                self.device.write(build.udp_packet(key, action.payload))
            elif isinstance(action, Open):
                assert original is not None
                self._spawn(self._udp_session, key, flow, original)
            elif isinstance(action, UdpUnreachable):
                self.table.reject("udp-unreachable")
                self._icmp_error(original, "ADDRESS_UNREACHABLE")
            elif isinstance(action, UdpDrop):
                self.table.drop(action.reason)
            elif isinstance(action, UdpClosed):
                self.table.remove_udp(key)
                scope = self.udp_scopes.pop(key, None)
                if scope is not None:
                    scope.cancel()

    async def _udp_session(self, key: FlowKey, flow: UdpFlow, first: bytes) -> None:
        destination = Destination(key.remote[0], key.remote[1])
        record = ConnectionRecord(
            "tun-udp", client=f"[{key.app[0]}]:{key.app[1]}", destination=destination
        )
        sock: socket.socket | None = None
        with trio.CancelScope() as scope:
            self.udp_scopes[key] = scope
            try:
                target = await self.dialer.udp_target(destination)
                host, port = target.remote
                family = socket.AF_INET6 if host.version == 6 else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
                self.udp_socks[key] = sock
                sock.connect((str(host), port))
            except (Proxy64Error, OSError) as exc:
                record.outcome = str(exc)
                self._udp_execute(key, flow, flow.failed(str(exc)), first)
                self.recorder.finish(record)
                return
            record.remote, record.reached, record.egress = target.remote, target.reached, (
                target.egress)  # fmt: skip
            self._name_the_record(record, key)
            self._udp_execute(key, flow, flow.opened(trio.current_time()), first)
            try:
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        payload = sock.recv(UDP_MAX_DATAGRAM)
                    except BlockingIOError:
                        continue
                    except ConnectionRefusedError:
                        # The destination answered ICMP port unreachable: tell the app.
                        self._icmp_error(first, "PORT_UNREACHABLE")
                        continue
                    self._udp_execute(key, flow, flow.from_remote(payload, trio.current_time()),
                                      first)  # fmt: skip
            finally:
                self.udp_scopes.pop(key, None)
                self.table.remove_udp(key)
                self.udp_socks.pop(key, None)
                if sock is not None:
                    trio.lowlevel.notify_closing(sock)
                    sock.close()
                record.bytes_up, record.bytes_down = flow.bytes_out, flow.bytes_in
                record.outcome = "ok"
                self.recorder.finish(record)

    def _dns_udp(self, key: FlowKey, payload: bytes) -> None:
        if self.dns_inflight >= DNS_INFLIGHT:
            self.table.drop("dns-busy")
            return
        self.dns_inflight += 1
        self._spawn(self._dns_answer, key, payload)

    async def _dns_answer(self, key: FlowKey, payload: bytes) -> None:
        try:
            assert self.responder is not None
            reply = await self.responder.respond(payload, transport="udp")
            if reply is not None:
                self.names.learn(reply)
                self.device.write(build.udp_packet(key, reply))
        finally:
            self.dns_inflight -= 1

    # --- ICMP echo -------------------------------------------------------------------------
    def _on_echo(self, inbound: EchoIn) -> None:
        if inbound.dst.version == 4 and self.settings.gateway4 is None:
            self.table.drop("ipv4-disabled")
        elif self._is_local(inbound.dst):
            if inbound.dst in (self.settings.gateway6, self.settings.gateway4):
                self.device.write(build.echo_reply(inbound))
            else:
                self.table.drop("echo-local-no-host")
        else:
            self._spawn(self._echo, inbound)

    async def _echo(self, inbound: EchoIn) -> None:
        try:
            target = await self.dialer.udp_target(Destination(inbound.dst, 0))
        except Proxy64Error:
            self.table.drop("echo-unmappable")
            return
        answered = await echo_mod.echo(target.remote[0], inbound.ident, inbound.sequence,
                                       inbound.data)  # fmt: skip
        if answered is None:
            answered = True  # no ICMP socket allowed: answered locally (docs/tun.md)
        if answered:
            self.device.write(build.echo_reply(inbound))
        else:
            self.table.drop("echo-no-reply")
