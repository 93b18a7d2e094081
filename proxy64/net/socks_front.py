"""The SOCKS front end driven by the relay hub: no trio task for a connection that need not wait.

The connection's life (slot, timers, leaving, hand-off, end, owned tunnel, a promoted
tunnel's continuation) is hub_front.py's, shared with the HTTP front end; here is what is
SOCKS: an accepted client's bytes are fed to the same sans-I/O machines and the same
handshake policy as the task path (proto/socks_dispatch.py handshake_step), replies are
written at once, and a CONNECT whose destination can be dialed without waiting
(Dialer.connect_now: an address literal, or a name whose DNS64 answer is cached,
connected inside connect()) becomes a hub tunnel owned by this connection. Everything
that must wait is resumed on the task path (socks_server.serve_connection with a Resume)
with what was consumed: a name to resolve, a connect in flight, several addresses to
race, UDP ASSOCIATE, every refusal and close (they linger), a slot refused by
--max-connections, a write that would block. So the replies, outcomes and log line are
the task path's own.

Invariants (besides hub_front.py's):
- The handshake deadline fires on the hub's timer; the task path then sends the §6
  TTL-expired reply and lingers (a client that sent nothing is closed here).
- Bytes the client sent with its request reach the destination before the tunnel's; a
  part the destination did not take is sent by the task path (the tunnel is promoted).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import Any

import trio

from proxy64.defaults import SOCKS_HANDSHAKE_READ
from proxy64.errors import Proxy64Error, RemoteProtocolError, SocksReply
from proxy64.net.auth_gate import auth_hold
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.hub_front import HubConnection, HubFront, Stage, client_text
from proxy64.net.listeners import Spawn
from proxy64.net.outcomes import client_lost
from proxy64.net.socks_server import Resume, handshake_timed_out, reply_bytes, serve_connection
from proxy64.proto.socks4 import Socks4Request
from proxy64.proto.socks5 import NEED_DATA, Command, Request
from proxy64.proto.socks_dispatch import (
    Closed,
    Held,
    SocksMachine,
    handshake_step,
    machine_for,
)

logger = logging.getLogger(__name__)


class SocksFront(HubFront["_Connection"]):
    """One per SOCKS listener set (ProxyServer): the connections it holds without a task."""

    def __init__(self, ctx: ProxyContext, spawn: Spawn) -> None:
        super().__init__(ctx, spawn, _Connection, "SOCKS", logger)
        self.require_auth = ctx.credentials is not None


class _Connection(HubConnection):
    """One SOCKS client while no task holds it."""

    __slots__ = ("machine", "request")

    front: SocksFront
    record: ConnectionRecord  # made at once: every SOCKS connection has its line

    def __init__(self, front: SocksFront, sock: socket.socket, address: Any) -> None:
        self.machine: SocksMachine | None = None
        self.request: Request | Socks4Request | None = None  # while its dial is in flight
        text = client_text(address, "?")
        super().__init__(front, sock, text, ConnectionRecord(front_end="socks5", client=text))

    def start(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as trio.SocketStream
        self._begin()

    # --- the handshake ----------------------------------------------------------------------

    def _readable(self) -> None:
        if self.stage is not Stage.HANDSHAKE:
            return
        try:
            data = os.read(self.fd, SOCKS_HANDSHAKE_READ)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end(client_lost(exc))
            return
        machine = self.machine
        if machine is None:
            if not data:
                self._hand_off(
                    Resume(None, self.deadline, error=Closed(
                        "client closed the connection without sending anything"
                    ))
                )  # fmt: skip
                return
            try:
                machine = machine_for(data[0], require_auth=self.front.require_auth)
            except RemoteProtocolError as error:  # not SOCKS: no reply (as the task path)
                logger.debug("%s: %s", self.client, error)
                self._end(str(error))
                return
            self.machine = machine
            self.record.front_end = machine.front_end
        machine.receive_data(data)
        hold = auth_hold(self.front.ctx, self.client)
        output, outcome = handshake_step(machine, self.front.ctx.credentials, hold)
        if outcome is NEED_DATA:
            if output:
                self._write(output, Resume(machine, self.deadline))
            return
        if isinstance(outcome, (Closed, Held, RemoteProtocolError)):
            self._hand_off(Resume(machine, self.deadline, unsent=output, error=outcome))
            return
        self._request(machine, outcome, output)

    def _write(self, data: bytes, resume: Resume) -> bool:
        """Write a handshake message now; if it cannot all go, the task path sends the rest
        (resume with unsent); a broken client ends the connection. True: all written."""
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._end(client_lost(exc))
            return False
        if written < len(data):
            self._hand_off(_replace(resume, unsent=data[written:]))
            return False
        return True

    def _request(self, machine: SocksMachine, request: Any, output: bytes) -> None:
        front = self.front
        handed_off = front.handed_off
        resume = Resume(machine, self.deadline, unsent=output, request=request)
        udp = isinstance(request, Request) and request.command is Command.UDP_ASSOCIATE
        if udp or self.slot is None:
            self._hand_off(resume)  # UDP, a refusal for --max-connections, a fake dialer
            return
        self.record.destination = request.destination
        try:
            result: Dialed | PendingDial | None = front.connect_now(
                request.destination, self.client
            )
        except Proxy64Error as exc:
            self._hand_off(_replace(resume, dial_error=exc))
            return
        if result is None:  # a name to resolve, a race: the task path's connect()
            self._hand_off(resume)
        elif front.relay_settings is None:  # a relay the hub cannot carry
            field = "pending" if isinstance(result, PendingDial) else "dialed"
            self._hand_off(_replace(resume, **{field: result}))
        elif isinstance(result, PendingDial):  # a real network: the hub waits for it
            # what the handshake owes the client goes now, not after the dial
            if output and not self._write(output, _replace(resume, pending=result)):
                if self.stage is Stage.GONE and self.front.handed_off == handed_off:
                    result.sock.close()  # ended here (the client is gone): not handed on
                return
            self.request = request
            self._dial_in_hub(result)
        else:
            self._established(machine, request, result, output)

    def _established(
        self, machine: SocksMachine, request: Any, dialed: Dialed, output: bytes
    ) -> None:
        record = self.record
        record.reached_by(dialed)
        self.dialed = dialed
        reply = output + reply_bytes(machine, SocksReply.SUCCEEDED, dialed.local)
        resume = Resume(machine, self.deadline, request=request, dialed=dialed, replied=True)
        if not self._write(reply, resume):
            return  # handed off (the task path owns the dial now) or ended
        early = machine.trailing_data()  # optimistic clients send data with the request
        written = 0
        remote = dialed.stream
        assert isinstance(remote, trio.SocketStream)
        if early:
            try:
                written = os.write(remote.socket.fileno(), early)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._end(client_lost(exc))
                return
            record.bytes_up += written
        self._enter_tunnel(remote.socket, record, early[written:])

    # --- the protocol's part of the shared life -------------------------------------------

    def _timed_out(self) -> None:
        error = handshake_timed_out(self.front.ctx)
        if self.machine is None:  # nothing sent at all: nothing to answer
            self._end(str(error))
        else:
            self._hand_off(Resume(self.machine, self.deadline, error=error))

    def _dial_done(self, dialed: Dialed) -> None:
        assert self.machine is not None and self.request is not None
        self._established(self.machine, self.request, dialed, b"")

    def _dial_failed(self, error: Proxy64Error) -> None:
        # the handshake is over: no deadline on the task path's refusal but its linger's
        resume = Resume(self.machine, math.inf, request=self.request, dial_error=error)
        self._hand_off(resume)

    def _hand_off(self, resume: Resume) -> None:
        """Continue on the task path with what was consumed (the connection leaves here)."""
        front, stream = self.front, self._to_task()
        front.spawn(serve_connection, stream, front.ctx, self.record, self.slot, resume)

    def _relay_lost(self, exc: BaseException) -> str:
        return client_lost(exc)  # as socks_server


def _replace(resume: Resume, **changes: Any) -> Resume:
    fields = {name: getattr(resume, name) for name in Resume.__dataclass_fields__}
    fields.update(changes)
    return Resume(**fields)
