"""The UDP and ICMP-echo half of the TUN stack: one outbound socket per UDP flow (via the
dialer's udp_target), DNS to the gateway answered by the DNS64 responder, echo requests
pinged through the egress (proxy64/tun/echo.py). Thin: the rules are in flow/udp_flow.py.
"""

from __future__ import annotations

import socket

import trio

from proxy64.defaults import DNS_PORT, TUN_UDP_QUEUE, UDP_MAX_DATAGRAM
from proxy64.destination import Destination
from proxy64.errors import Proxy64Error
from proxy64.flow import build
from proxy64.flow.table import Ignore
from proxy64.flow.udp_flow import Deliver, Open, SendOut, UdpAction, UdpClosed, UdpDrop, UdpFlow
from proxy64.flow.udp_flow import Unreachable as UdpUnreachable
from proxy64.flow.wire import EchoIn, FlowKey, UdpIn
from proxy64.net.context import ConnectionRecord
from proxy64.tun import echo as echo_mod
from proxy64.tun.stack_base import Packet, StackBase

DNS_INFLIGHT = 256  # DNS queries from the app answered at once; beyond, dropped (counted)


class UdpEchoStack(StackBase):
    # --- UDP -------------------------------------------------------------------------------
    def _on_udp(self, inbound: UdpIn, packet: Packet) -> None:
        key = inbound.key
        if not self._family_allowed(key, packet, opens=True):
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
        self, key: FlowKey, flow: UdpFlow, actions: list[UdpAction], original: Packet | None
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
        record = ConnectionRecord("tun-udp", client=key.app_text, destination=destination)
        sock: socket.socket | None = None
        with trio.CancelScope() as scope:
            self.udp_scopes[key] = scope
            try:
                target = await self.dialer.udp_target(destination, key.app_text)
                host, port = target.remote
                family = socket.AF_INET6 if host.version == 6 else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
                self.udp_socks[key] = sock
                sock.connect((str(host), port))
            except (Proxy64Error, OSError) as exc:
                record.failed(exc)
                self._udp_execute(key, flow, flow.failed(str(exc)), first)
                self.recorder.finish(record)
                return
            record.reached_by(target)
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
