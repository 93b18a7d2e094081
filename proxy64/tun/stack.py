"""The TUN packet loop: read packets, feed the flow machines, carry out their actions.

A thin loop (STYLE 5): parsing is proxy64/flow/wire.py (over the packet codec), TCP and
UDP rules are the machines in proxy64/flow, the bounded table decides admission. Here:
dial through the one dialer (connect / udp_target), run the relay on each TCP flow as a
stream, answer DNS sent to the gateway with the DNS64 responder (UDP and TCP port 53),
ping through the egress, and write the packets the machines ask for. Reads are batched
per wakeup; nothing a packet contains can stop the loop (decode never raises, machine
errors are counted and the flow reset). This module: the loop, TCP and timers;
stack_udp.py: UDP, DNS over UDP and echo; stack_base.py: state and address rules.
"""

from __future__ import annotations

import logging
import os

import trio

from proxy64.defaults import DNS_PORT, TUN_SOCKET_READ_MAX, TUN_TCP_MAX_RETRIES
from proxy64.destination import Destination
from proxy64.errors import Proxy64Error
from proxy64.flow import build
from proxy64.flow.segment import Segment
from proxy64.flow.table import Ignore, Refuse
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
from proxy64.flow.wire import EchoIn, FlowKey, Ignored, Malformed, TcpIn, TooBig, UdpIn
from proxy64.net.context import ConnectionRecord
from proxy64.tun.flow_stream import TunTcpStream
from proxy64.tun.heap import keep_freed_memory
from proxy64.tun.socket_stream import TunSocketStream
from proxy64.tun.stack_base import Packet, ResponderLike, StackSettings, refusal_of
from proxy64.tun.stack_udp import UdpEchoStack

__all__ = ["ResponderLike", "StackSettings", "TunStack", "refusal_of"]

logger = logging.getLogger(__name__)

TIMER_TICK = 0.05  # seconds between retransmission-timer scans
UDP_TICK = 1.0


class TunStack(UdpEchoStack):
    """The whole TUN stack: the packet loop and TCP here, UDP/echo in UdpEchoStack."""

    # --- the loop --------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        keep_freed_memory()  # fewer heap shrink/grow cycles at bulk speed (heap.py)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timers)
                nursery.start_soon(self._push_corked)
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

    def cork(self, stream: TunTcpStream) -> None:
        """stream's send_all may have held a partial segment: push it soon (below)."""
        self._corked[stream.key] = stream
        self._cork_lot.unpark_all()

    async def _push_corked(self) -> None:
        """Push held tails once their relay has had its turn to send more.

        A relay's next chunk arrives two scheduler passes after its send_all returned (the
        socket receive, then send_all), so a flow still getting data keeps its tail held
        and the next chunk completes the segment; a flow whose sender paused is pushed
        after those passes: microseconds, not a Nagle-style wait for an ACK."""
        while True:
            if not self._corked:
                await self._cork_lot.park()
            sends = {key: stream.sends for key, stream in self._corked.items()}
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            now = trio.current_time()
            for key, count in sends.items():
                stream = self._corked.get(key)
                if stream is None or stream.sends != count:
                    continue  # more data came: the next round decides
                del self._corked[key]
                if self.streams.get(key) is stream:
                    self.execute(key, stream.flow, stream.flow.push(now))

    def on_packet(self, packet: Packet, *, trusted: bool = False) -> None:
        """trusted: the kernel vouched for the checksums (virtio_net_hdr flags)."""
        inbound = self.decoder.decode(packet, verify=not trusted)
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

    def _on_malformed(self, inbound: Malformed, packet: Packet) -> None:
        gateway = self._gateway_for(packet) if packet else None
        error = build.reassembly_refused(packet, gateway) if inbound.fragment and gateway else None
        if error is not None:
            self.table.reject(inbound.reason)  # RFC 4443 §3.3: reassembly refused
            self.device.write(error)
        else:
            self.table.drop(inbound.reason)

    def _write_tcp(
        self, key: FlowKey, segment: Segment, mss: int = 0, stream: TunTcpStream | None = None
    ) -> None:
        if self.device.vnet:  # the checksum is left to the kernel (CHECKSUM_PARTIAL)
            if stream is not None:  # a dialed flow: its header template
                headers, start = stream.headers.headers(segment)
            else:
                headers, start = build.tcp_headers_partial(key, segment)
            gso = mss if len(segment.payload) > mss > 0 else 0  # a super-segment: GSO
            self.device.write(headers, start, build.TCP_CHECKSUM_OFFSET, gso, segment.payload)
        else:
            self.device.write(build.tcp_packet(key, segment))

    # --- TCP -------------------------------------------------------------------------------
    def _on_tcp(self, inbound: TcpIn, packet: Packet) -> None:
        key, seg = inbound.key, inbound.segment
        flow = self.table.tcp.get(key)
        if flow is not None:  # an existing flow's key passed the checks below at its SYN
            self.execute(key, flow, flow.handle(SegmentArrived(seg), trio.current_time()))
            return
        if not self._family_allowed(key, packet, opens=seg.syn and not seg.has_ack):
            return
        verdict = self.table.tcp_admit(key, seg)
        if isinstance(verdict, Refuse):
            self._write_tcp(key, verdict.reset)
            return
        if isinstance(verdict, Ignore):
            return
        flow = self.table.add_tcp(key, seg, int.from_bytes(os.urandom(4)), self._tcp_settings(
            key), trio.current_time())  # fmt: skip
        self.execute(key, flow, flow.start(), packet)  # Dial: the destination first

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
        self, key: FlowKey, flow: TcpFlow, actions: list[Action], original: Packet | None = None
    ) -> None:
        stream = self.streams.get(key)
        for action in actions:
            if isinstance(action, Transmit):
                self._write_tcp(key, action.segment, flow.snd_mss, stream)
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
            elif isinstance(action, Dial) and original is not None:
                self._spawn(self._dial_tcp, key, flow, original)
        if self.table.tcp.get(key) is flow:
            self.table.settle_tcp(key)

    async def _dial_tcp(self, key: FlowKey, flow: TcpFlow, syn_packet: Packet) -> None:
        try:
            await self._dial_and_relay(key, flow, syn_packet)
        except Exception:
            self.execute(key, flow, flow.abort("internal error in proxy64 (see its log)"))
            raise

    async def _dial_and_relay(self, key: FlowKey, flow: TcpFlow, syn_packet: Packet) -> None:
        destination = Destination(key.remote[0], key.remote[1])
        record = ConnectionRecord("tun-tcp", client=key.app_text, destination=destination)
        if self._is_local(key.remote[0]):
            await self._local_tcp(key, flow, syn_packet, record)
            return
        try:
            with trio.fail_after(self.settings.connect_timeout + 1):
                dialed = await self.dialer.connect(destination, key.app_text)
        except (Proxy64Error, trio.TooSlowError, OSError) as exc:
            refusal = Refusal.ADDRESS_UNREACHABLE if isinstance(exc, trio.TooSlowError) else (
                refusal_of(exc))  # fmt: skip
            record.failed(exc)
            record.outcome = record.outcome or "timed out"
            if refusal is Refusal.RESET:
                self.table.reject("tcp-reset")  # the others are counted with their ICMP
            self.execute(key, flow, flow.handle(DialFailed(refusal, record.outcome),
                                                trio.current_time()), syn_packet)  # fmt: skip
            self.recorder.finish(record)
            return
        record.reached_by(dialed)
        self._name_the_record(record, key)
        stream = TunTcpStream(self, key, flow)
        self.streams[key] = stream
        self.execute(key, flow, flow.handle(DialSucceeded(), trio.current_time()))
        # the socket side yields by share too (socket_stream.py): fewer run-loop trips;
        # each read completes the flow's queued segments (fill_size), so the flow never
        # joins two reads into one segment
        remote: trio.abc.HalfCloseableStream = dialed.stream
        if isinstance(remote, trio.SocketStream):

            def read_size() -> int:  # whole segments, up to the free send buffer
                return flow.fill_size(min(flow.send_space, TUN_SOCKET_READ_MAX))

            remote = TunSocketStream(remote, read_size=read_size)
        try:
            await self.relay(stream, remote, record)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(remote)
                await stream.aclose()
            self.recorder.finish(record)

    async def _local_tcp(
        self, key: FlowKey, flow: TcpFlow, syn_packet: Packet, record: ConnectionRecord
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
