"""The SOCKS front end driven by the relay hub: no trio task for a connection that need not wait.

Issue 7: a task per connection (spawn, cancel scopes, a scheduler trip per wake-up) was
most of proxy64's CPU per connection. Here an accepted client is a Watcher in the relay
hub's epoll set (proxy64/net/relay_hub.py): its bytes are fed to the same sans-I/O
machines and the same handshake policy as the task path (proto/socks_dispatch.py
handshake_step), replies are written at once, and a CONNECT whose destination can be
dialed without waiting (Dialer.connect_now: an address literal, or a name whose DNS64
answer is cached, connected inside connect()) becomes a hub tunnel owned by this
connection, not by a task. Everything that must wait is resumed on the task path
(socks_server.serve_connection with a Resume) with what was consumed: a name to resolve,
a connect in flight, several addresses to race, UDP ASSOCIATE, every refusal and close
(they linger), a slot refused by --max-connections, a write that would block. So the
replies, outcomes and log line are the task path's own.

Invariants:
- Each connection ends exactly once: finish_connection() here, or serve_connection() /
  _continue() after a hand-off (the connection leaves `live` first).
- Time limits hold without a task: the hub's timers fire the handshake deadline (then
  the task path sends the §6 TTL-expired reply and lingers) and the idle timeout of an
  owned tunnel (checked against its last byte, rescheduled while it moves).
- An owned tunnel the hub promotes (bulk, a full destination) continues in a task on
  relay()'s task path from its tails (relay(..., promoted=)); nothing is lost.
- drain() (at shutdown) waits for these connections; cancelled, it ends them.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
from typing import Any

import trio

from proxy64.defaults import SOCKS_HANDSHAKE_READ
from proxy64.errors import Proxy64Error, RemoteProtocolError, SocksReply
from proxy64.net.context import ConnectionRecord, Dialed, ProxyContext
from proxy64.net.dialer import PendingDial
from proxy64.net.listeners import Spawn
from proxy64.net.relay import Relay, relay
from proxy64.net.relay_hub import Ending, HubTunnel, TimerHandle, current_hub
from proxy64.net.socks_server import (
    Resume,
    finish_connection,
    handshake_timed_out,
    reply_bytes,
    serve_connection,
)
from proxy64.net.splice import HAVE_SPLICE
from proxy64.proto.socks5 import NEED_DATA, Command, Request
from proxy64.proto.socks_dispatch import Closed, SocksMachine, handshake_step, machine_for

logger = logging.getLogger(__name__)


class Stage(enum.Enum):
    HANDSHAKE = "handshake"  # the hub watches the client fd
    TUNNEL = "tunnel"  # an owned hub tunnel
    GONE = "gone"  # ended, or handed to a task


class SocksFront:
    """One per SOCKS listener set (ProxyServer): the connections it holds without a task."""

    def __init__(self, ctx: ProxyContext, spawn: Spawn) -> None:
        self.ctx = ctx
        self.spawn = spawn
        self.hub = current_hub()
        self.connections: set[_Connection] = set()
        self.require_auth = ctx.credentials is not None
        self.connect_now = getattr(ctx.dialer, "connect_now", None)
        relay_settings = ctx.relay if isinstance(ctx.relay, Relay) else None
        threshold = relay_settings.splice_threshold if relay_settings is not None else None
        # The hub carries the tunnel only where relay() would start it in the hub too.
        self.relay_settings = relay_settings if threshold != 0 else None
        self.threshold = threshold if HAVE_SPLICE else None
        self.handed_off = 0  # connections resumed on the task path (tests, profiling)
        self.served = 0  # connections that ended without ever having a task
        self._emptied: trio.Event | None = None

    @property
    def live(self) -> int:
        return len(self.connections)

    def accepted(self, sock: socket.socket, address: Any) -> None:
        try:
            connection = _Connection(self, sock, address)
        except Exception:  # a bug: this connection only
            logger.exception("SOCKS front end failed on a new connection (a bug in proxy64)")
            sock.close()
            return
        try:
            connection.start()
        except Exception as exc:
            connection._bug(exc)

    async def drain(self) -> None:
        try:
            while self.connections:
                self._emptied = trio.Event()
                await self._emptied.wait()
        finally:
            for connection in list(self.connections):
                connection.abort()

    def left(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._emptied is not None:
            self._emptied.set()


def _client_text(address: Any) -> str:
    try:
        host, port = address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Connection:
    """One client while no task holds it: a hub Watcher, Timer and TunnelOwner."""

    __slots__ = (
        "deadline",
        "dialed",
        "fd",
        "front",
        "machine",
        "record",
        "slot",
        "sock",
        "stage",
        "timer",
        "tunnel",
    )

    def __init__(self, front: SocksFront, sock: socket.socket, address: Any) -> None:
        self.front = front
        self.sock = sock
        self.fd = sock.fileno()
        self.record = ConnectionRecord(front_end="socks5", client=_client_text(address))
        self.machine: SocksMachine | None = None
        self.dialed: Dialed | None = None
        self.tunnel: HubTunnel | None = None
        self.stage = Stage.HANDSHAKE
        ctx = front.ctx
        self.slot: object | None = self  # borrower token for --max-connections
        try:
            ctx.connection_slots.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            self.slot = None
        self.deadline = trio.current_time() + ctx.handshake_timeout
        self.timer: TimerHandle | None = None  # the handshake deadline, then the idle check
        front.connections.add(self)

    def start(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as trio.SocketStream
        self._readable()  # the greeting is often here already
        if self.stage is Stage.HANDSHAKE:
            self.front.hub.watch(self.fd, self)
            self.timer = self.front.hub.call_at(self.deadline, self)

    # --- the handshake (a hub Watcher) ---------------------------------------------------

    def readable(self, now: float) -> None:
        try:
            self._readable()
        except Exception as exc:
            self._bug(exc)

    def _readable(self) -> None:
        if self.stage is not Stage.HANDSHAKE:
            return
        try:
            data = os.read(self.fd, SOCKS_HANDSHAKE_READ)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end(f"client connection lost: {exc or type(exc).__name__}")
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
                logger.debug("%s: %s", self.record.client, error)
                self._end(str(error))
                return
            self.machine = machine
            self.record.front_end = machine.front_end
        machine.receive_data(data)
        output, outcome = handshake_step(machine, self.front.ctx.credentials)
        if outcome is NEED_DATA:
            if output:
                self._write(output, Resume(machine, self.deadline))
            return
        if isinstance(outcome, (Closed, RemoteProtocolError)):
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
            self._end(f"client connection lost: {exc or type(exc).__name__}")
            return False
        if written < len(data):
            self._hand_off(_with_unsent(resume, data[written:]))
            return False
        return True

    def _request(self, machine: SocksMachine, request: Any, output: bytes) -> None:
        front = self.front
        resume = Resume(machine, self.deadline, unsent=output, request=request)
        udp = isinstance(request, Request) and request.command is Command.UDP_ASSOCIATE
        if udp or self.slot is None or front.connect_now is None:
            self._hand_off(resume)  # UDP, a refusal for --max-connections, a fake dialer
            return
        self.record.destination = request.destination
        try:
            result: Dialed | PendingDial | None = front.connect_now(request.destination)
        except Proxy64Error as exc:
            self._hand_off(_replace(resume, dial_error=exc))
            return
        if result is None:  # a name to resolve, a race: the task path's connect()
            self._hand_off(resume)
        elif isinstance(result, PendingDial):  # a real network: wait for the handshake
            self._hand_off(_replace(resume, pending=result))
        elif front.relay_settings is None:  # a relay the hub cannot carry
            self._hand_off(_replace(resume, dialed=result))
        else:
            self._established(machine, request, result, output)

    def _established(
        self, machine: SocksMachine, request: Any, dialed: Dialed, output: bytes
    ) -> None:
        record = self.record
        record.remote = dialed.remote
        record.reached = dialed.reached
        record.egress = dialed.egress
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
                self._end(f"client connection lost: {exc or type(exc).__name__}")
                return
            record.bytes_up += written
        front = self.front
        # the watched client fd becomes the tunnel's (no epoll_ctl): see RelayHub.add
        tunnel = front.hub.add(self.sock, remote.socket, record, front.threshold, owner=self)
        self.tunnel = tunnel
        self.stage = Stage.TUNNEL
        if written < len(early):  # the remote took only part: the task path sends the rest
            tunnel.pending_up = early[written:]
            front.hub.promote(tunnel)
            return
        assert front.relay_settings is not None
        if self.timer is not None:
            self.timer.cancel()
        self.timer = front.hub.call_at(
            tunnel.last_active + front.relay_settings.idle_timeout, self
        )

    # --- timers: the handshake deadline, then the tunnel's idle timeout -------------------

    def expired(self, now: float) -> float | None:
        try:
            return self._expired(now)
        except Exception as exc:
            self._bug(exc)
            return None

    def _expired(self, now: float) -> float | None:
        if self.stage is Stage.HANDSHAKE:
            if now < self.deadline:
                return self.deadline
            if self.machine is None:  # nothing sent at all: nothing to answer
                self._end(str(handshake_timed_out(self.front.ctx)))
                return None
            self._hand_off(Resume(self.machine, self.deadline,
                                  error=handshake_timed_out(self.front.ctx)))  # fmt: skip
            return None
        if self.stage is Stage.TUNNEL and self.tunnel is not None:
            settings = self.front.relay_settings
            assert settings is not None
            if self.tunnel.ending is not Ending.RUNNING:
                return None
            again = self.front.hub.expire_idle(self.tunnel, settings.idle_timeout, now)
            if again is None:
                self._end(f"idle for {settings.idle_timeout:g} s, closed")
            return again
        return None

    # --- the owned tunnel (a hub TunnelOwner) ----------------------------------------------

    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        try:
            self._tunnel_ended(tunnel)
        except Exception as exc:
            self._bug(exc)

    def _tunnel_ended(self, tunnel: HubTunnel) -> None:
        if self.stage is not Stage.TUNNEL:
            return
        if tunnel.ending is Ending.PROMOTED:
            self._leave()
            dialed = self.dialed
            assert dialed is not None
            self.front.spawn(_continue, self, dialed, tunnel)
            return
        if tunnel.broken:
            logger.debug("tunnel %s: %s", self.record.client, tunnel.broken)
        self._end(tunnel.broken or "ok")

    # --- leaving ---------------------------------------------------------------------------

    def _leave(self) -> None:
        if self.stage is Stage.HANDSHAKE:
            self.front.hub.unwatch(self.fd)
        elif self.stage is Stage.TUNNEL and self.tunnel is not None:
            self.front.hub.remove(self.tunnel)
        self.stage = Stage.GONE
        if self.timer is not None:  # else the pending entry keeps this object alive
            self.timer.cancel()
            self.timer = None
        self.front.left(self)

    def _hand_off(self, resume: Resume) -> None:
        """Continue on the task path with what was consumed (the connection leaves here)."""
        self._leave()
        front = self.front
        front.handed_off += 1
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(self.sock))
        front.spawn(serve_connection, stream, front.ctx, self.record, self.slot, resume)

    def _end(self, outcome: str) -> None:
        """End here: outcome recorded (unless one is already), sockets closed, one line."""
        if self.stage is Stage.GONE:
            return
        self._leave()
        if self.record.outcome == "open":
            self.record.outcome = outcome
        if self.dialed is not None:
            _close(self.dialed)
        self.sock.close()
        self.front.served += 1
        finish_connection(self.front.ctx, self.record, self.slot)

    def _bug(self, exc: Exception) -> None:
        """A bug in a hub callback ends this connection only (logged, record finished)."""
        logger.exception("SOCKS front end failed for %s (a bug in proxy64)", self.record.client)
        self._end(f"internal error: {exc!r}")

    def abort(self) -> None:
        """Shutdown ran out of grace: end now (finish_connection says why)."""
        self._end("open")


def _with_unsent(resume: Resume, unsent: bytes) -> Resume:
    return _replace(resume, unsent=unsent)


def _replace(resume: Resume, **changes: Any) -> Resume:
    fields = {name: getattr(resume, name) for name in Resume.__dataclass_fields__}
    fields.update(changes)
    return Resume(**fields)


def _close(dialed: Dialed) -> None:
    stream = dialed.stream
    assert isinstance(stream, trio.SocketStream)  # connect_now dials sockets only
    stream.socket.close()


async def _continue(connection: _Connection, dialed: Dialed, tunnel: HubTunnel) -> None:
    """A promoted owned tunnel goes on in a task on relay()'s task path (bulk, a full
    destination); the connection ends here as in socks_server._connect."""
    front, sock, record = connection.front, connection.sock, connection.record
    settings = front.relay_settings
    assert settings is not None
    client = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    try:
        await relay(
            client,
            dialed.stream,
            record,
            idle_timeout=settings.idle_timeout,
            splice_threshold=settings.splice_threshold,
            splice_release_after=settings.splice_release_after,
            promoted=tunnel,
        )
        if record.outcome == "open":
            record.outcome = "ok"
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if record.outcome == "open":
            record.outcome = f"client connection lost: {exc or type(exc).__name__}"
    finally:
        sock.close()
        _close(dialed)
        finish_connection(front.ctx, record, connection.slot)
