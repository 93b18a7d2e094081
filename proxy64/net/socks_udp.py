"""SOCKS5 UDP ASSOCIATE (RFC 1928 §7): relay one client's datagrams while its TCP lives.

The relay socket is bound on the address the client reached the listener on (so it has the
client's family) and is named in the reply's BND.ADDR/BND.PORT. Invariants:
- Datagrams are accepted only from the TCP client's IP; the port is the one in the request
  when it is not 0, else the first datagram's (RFC 1928 §7: "the UDP relay server MUST
  drop" datagrams from other sources).
- Each datagram goes through ctx.dialer.udp_target (the same resolution and egress rules as
  TCP) and out of one outbound socket per address family.
- Only answers from an address a client datagram was sent to come back, wrapped in the §7
  header naming the source as the client addressed it (the name if it sent to a name).
- The association ends when the TCP control connection closes, or after `idle` seconds
  without a datagram either way. Every drop is counted by reason and logged at the end.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from ipaddress import ip_address

import trio

from proxy64.defaults import UDP_ASSOCIATION_IDLE, UDP_MAX_DATAGRAM, UDP_TARGET_CACHE
from proxy64.destination import Destination
from proxy64.errors import Proxy64Error, RemoteProtocolError, SocksReply
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import IPAddress, UdpTarget
from proxy64.proto.socks5 import Reply, Socks5Server
from proxy64.proto.socks5_udp import UdpDropped, build_udp_datagram, parse_udp_datagram

logger = logging.getLogger(__name__)

Endpoint = tuple[IPAddress, int]


def _endpoint(address: tuple[str, int] | tuple[str, int, int, int]) -> Endpoint:
    return ip_address(address[0].split("%")[0]), int(address[1])


async def serve_udp_association(
    control: trio.SocketStream,
    machine: Socks5Server,
    requested: Destination,
    ctx: ProxyContext,
    record: ConnectionRecord,
    *,
    idle: float = UDP_ASSOCIATION_IDLE,
) -> None:
    """Bind the relay socket, send the success reply, relay until the control closes."""
    local = _endpoint(control.socket.getsockname())
    client = _endpoint(control.socket.getpeername())
    relay_socket = trio.socket.socket(control.socket.family, socket.SOCK_DGRAM)
    with relay_socket:
        try:
            await relay_socket.bind((str(local[0]), 0))
        except OSError as exc:
            record.outcome = f"cannot open a UDP relay socket on {local[0]}: {exc.strerror}"
            await control.send_all(machine.send(Reply(SocksReply.GENERAL_FAILURE)))
            return
        bound = _endpoint(relay_socket.getsockname())
        await control.send_all(machine.send(Reply(SocksReply.SUCCEEDED, bound)))
        port = requested.port if requested.port else None
        association = _Association(ctx, record, relay_socket, (client[0], port), idle=idle)
        try:
            await association.run(control)
        finally:
            association.close()


class _Association:
    def __init__(
        self,
        ctx: ProxyContext,
        record: ConnectionRecord,
        relay_socket: trio.socket.SocketType,
        client: tuple[IPAddress, int | None],
        *,
        idle: float,
    ) -> None:
        self.ctx = ctx
        self.record = record
        self.relay_socket = relay_socket
        self.client_ip, self.client_port = client
        self.idle = idle
        self.last_activity = trio.current_time()
        self.targets: dict[Destination, UdpTarget] = {}
        self.asked_as: dict[Endpoint, Destination] = {}  # remote → what the client sent to
        self.outbound: dict[int, trio.socket.SocketType] = {}  # IP version → socket
        self.drops: Counter[str] = Counter()

    async def run(self, control: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_control, control, nursery.cancel_scope)
            nursery.start_soon(self._watch_idle, nursery.cancel_scope)
            nursery.start_soon(self._from_client, nursery)

    def close(self) -> None:
        for sock in self.outbound.values():
            sock.close()
        if self.drops:
            logger.info(
                "UDP association of %s dropped %s",
                self.record.client,
                ", ".join(f"{n} × {reason}" for reason, n in self.drops.most_common()),
            )

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1
        logger.debug("UDP %s: dropped a datagram: %s", self.record.client, reason)

    async def _watch_control(self, control: trio.SocketStream, scope: trio.CancelScope) -> None:
        """RFC 1928 §7: the association ends when its TCP connection does."""
        try:
            while await control.receive_some(UDP_MAX_DATAGRAM):
                pass  # nothing more is expected on the control connection
            self.record.outcome = "ok"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.record.outcome = f"control connection lost: {exc or type(exc).__name__}"
        scope.cancel()

    async def _watch_idle(self, scope: trio.CancelScope) -> None:
        while True:
            deadline = self.last_activity + self.idle
            if trio.current_time() >= deadline:
                self.record.outcome = f"UDP association idle for {self.idle:g} s, closed"
                scope.cancel()
                return
            await trio.sleep_until(deadline)

    async def _target(self, destination: Destination) -> UdpTarget:
        target = self.targets.get(destination)
        if target is None:
            target = await self.ctx.dialer.udp_target(destination, self.record.client)
            if len(self.targets) >= UDP_TARGET_CACHE:
                self.targets.pop(next(iter(self.targets)))
            self.targets[destination] = target
        return target

    async def _socket_for(self, version: int, nursery: trio.Nursery) -> trio.socket.SocketType:
        sock = self.outbound.get(version)
        if sock is None:
            family = socket.AF_INET6 if version == 6 else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_DGRAM)
            await sock.bind(("::" if version == 6 else "0.0.0.0", 0))
            self.outbound[version] = sock
            nursery.start_soon(self._from_remote, sock)
        return sock

    async def _from_client(self, nursery: trio.Nursery) -> None:
        while True:
            data, address = await self.relay_socket.recvfrom(UDP_MAX_DATAGRAM)
            source = _endpoint(address)
            if source[0] != self.client_ip:
                self._drop(f"sender {source[0]} is not the client {self.client_ip}")
                continue
            if self.client_port is None:
                self.client_port = source[1]
            elif source[1] != self.client_port:
                self._drop(f"sender port {source[1]} is not the client's {self.client_port}")
                continue
            self.last_activity = trio.current_time()
            try:
                parsed = parse_udp_datagram(data)
            except RemoteProtocolError as exc:
                self._drop(str(exc))
                continue
            if isinstance(parsed, UdpDropped):
                self._drop(parsed.reason)
                continue
            try:
                target = await self._target(parsed.destination)
            except Proxy64Error as exc:
                self._drop(str(exc))
                continue
            if self.record.remote is None:
                self.record.destination = parsed.destination
                self.record.reached_by(target)
            host, port = target.remote
            if len(self.asked_as) >= UDP_TARGET_CACHE and target.remote not in self.asked_as:
                self.asked_as.pop(next(iter(self.asked_as)))
            self.asked_as[target.remote] = parsed.destination
            try:
                sock = await self._socket_for(host.version, nursery)
                await sock.sendto(parsed.payload, (str(host), port))
            except OSError as exc:
                self._drop(f"cannot send to {parsed.destination}: {exc.strerror}")
                continue
            self.record.bytes_up += len(parsed.payload)

    async def _from_remote(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, address = await sock.recvfrom(UDP_MAX_DATAGRAM)
            except OSError as exc:  # an ICMP error reported on the socket: not fatal
                self._drop(f"outbound socket error: {exc.strerror}")
                continue
            source = self.asked_as.get(_endpoint(address))
            if source is None or self.client_port is None:
                self._drop(f"answer from {address[0]} port {address[1]}, not a destination")
                continue
            self.last_activity = trio.current_time()
            try:
                await self.relay_socket.sendto(
                    build_udp_datagram(source, data), (str(self.client_ip), self.client_port)
                )
            except OSError as exc:
                self._drop(f"cannot send to the client: {exc.strerror}")
                continue
            self.record.bytes_down += len(data)
