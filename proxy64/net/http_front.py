# The HTTP front end driven by the relay hub: no trio task for a CONNECT that need not wait.
#
# Issue 7: a task per connection (spawn, a scheduler trip per wake-up) was most of the
# CPU of a CONNECT. Here an accepted client is a Watcher in the relay hub's epoll set
# (proxy64/net/relay_hub.py, as proxy64/net/socks_front.py does for SOCKS): its bytes go
# into the same h11 machine the task path uses, the head is classified by the same
# proto/httpproxy.py, and a CONNECT (RFC 9110 §9.3.6) whose destination the dialer can
# connect without waiting (Dialer.connect_now: a literal, or a name whose DNS64 answer is
# cached, connected inside connect(2)) gets h11's 200 at once and becomes a hub tunnel
# owned by this connection. Everything else goes on in a task on the task path
# (http_server.serve_http_connection with a Resume) from exactly where it stopped: every
# forwarded request (http://), every refusal and error answer, a head that is not
# complete by the deadline (408), a dial in flight or refused, a slot refused by
# --max-connections (503), a 200 the client did not take at once. So replies, outcomes
# and the log line are the task path's own.
#
# Invariants: each connection ends exactly once (here, or on the task path after it left
# `connections`); the handshake deadline holds through the hub's timers, and an owned
# tunnel's idle timeout is checked against its last byte; a tunnel the hub promotes (bulk,
# a full destination) continues on relay()'s task path from its tails.

from __future__ import annotations

import enum
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import h11
import trio

from proxy64.defaults import HTTP_BODY_CHUNK
from proxy64.errors import Proxy64Error, RemoteProtocolError
from proxy64.net.context import ConnectionRecord, Dialed, ProxyContext
from proxy64.net.dialer import PendingDial
from proxy64.net.http_server import Resume, new_machine, serve_http_connection
from proxy64.net.relay import Relay, relay
from proxy64.net.relay_hub import Ending, HubTunnel, TimerHandle, current_hub
from proxy64.net.splice import HAVE_SPLICE
from proxy64.proto.http_headers import has_content
from proxy64.proto.httpproxy import ConnectTarget, check_proxy_auth, classify, tunnel_established

logger = logging.getLogger(__name__)

Spawn = Callable[..., None]  # spawn(async_fn, *args): a task in the server's nursery


class Stage(enum.Enum):
    HEAD = "head"  # the hub watches the client fd for the request head
    TUNNEL = "tunnel"  # an owned hub tunnel
    GONE = "gone"  # ended, or handed to a task


class HttpFront:
    """One per HTTP listener set: the connections it holds without a task (listeners.Front)."""

    def __init__(self, ctx: ProxyContext, spawn: Spawn) -> None:
        self.ctx = ctx
        self.spawn = spawn
        self.hub = current_hub()
        self.connections: set[_Connection] = set()
        self.connect_now = getattr(ctx.dialer, "connect_now", None)
        settings = ctx.relay if isinstance(ctx.relay, Relay) else None
        threshold = settings.splice_threshold if settings is not None else None
        # The hub carries the tunnel only where relay() would start it in the hub too.
        self.relay_settings = settings if threshold != 0 else None
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
            logger.exception("HTTP front end failed on a new connection (a bug in proxy64)")
            sock.close()
            return
        try:
            connection.start()
        except Exception:
            connection._failed()

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


def client_text(address: Any) -> str:
    """host:port or [IPv6]:port of the accepted peer (as http_server's _peer_name)."""
    try:
        host, port = address[:2]
    except (TypeError, ValueError):
        return "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Connection:
    """One client while no task holds it: a hub Watcher, Timer and TunnelOwner."""

    __slots__ = (
        "client",
        "conn",
        "deadline",
        "dialed",
        "fd",
        "front",
        "record",
        "slot",
        "sock",
        "stage",
        "timer",
        "tunnel",
    )

    def __init__(self, front: HttpFront, sock: socket.socket, address: Any) -> None:
        self.front = front
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client_text(address)
        self.conn = new_machine()
        self.record: ConnectionRecord | None = None  # made once the tunnel is dialed
        self.dialed: Dialed | None = None
        self.tunnel: HubTunnel | None = None
        self.stage = Stage.HEAD
        ctx = front.ctx
        self.slot: object | None = self  # borrower token for --max-connections
        try:
            ctx.connection_slots.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            self.slot = None
        self.deadline = trio.current_time() + ctx.handshake_timeout
        self.timer: TimerHandle | None = None  # the head's deadline, then the idle check
        front.connections.add(self)

    def start(self) -> None:
        self.sock.setblocking(False)
        if self.slot is None:  # the task path answers 503
            self._hand_off(Resume(self.conn))
            return
        self._readable()  # the head is often here already
        if self.stage is Stage.HEAD:
            self.front.hub.watch(self.fd, self)
            self.timer = self.front.hub.call_at(self.deadline, self)

    # --- the request head (a hub Watcher) ----------------------------------------------------

    def readable(self, now: float) -> None:
        try:
            self._readable()
        except Exception:  # a bug: end this connection only, keep the hub going
            self._failed()

    def expired(self, now: float) -> float | None:
        try:
            return self._expired(now)
        except Exception:
            self._failed()
            return None

    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        try:
            self._tunnel_ended(tunnel)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        logger.exception("HTTP front end failed on %s (a bug in proxy64)", self.client)
        try:
            self.abort("internal error in the HTTP front end (a bug in proxy64)")
        except Exception:  # pragma: no cover - the last resort must not raise either
            logger.exception("HTTP front end could not end %s", self.client)

    def _readable(self) -> None:
        if self.stage is not Stage.HEAD:
            return
        try:
            data = os.read(self.fd, HTTP_BODY_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # reset: an EOF, as on the task path
            data = b""
        conn = self.conn
        conn.receive_data(data)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._hand_off(Resume(conn, error=exc))
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):  # ConnectionClosed: nothing to answer
            self._end_quietly()
            return
        self._request(event)

    def _request(self, request: h11.Request) -> None:
        """A CONNECT the hub can carry goes on here; anything else on the task path."""
        ctx, front, conn = self.front.ctx, self.front, self.conn
        resume = Resume(conn, request=request)
        if (
            request.method != b"CONNECT"
            or front.connect_now is None
            or front.relay_settings is None
        ):
            self._hand_off(resume)
            return
        try:
            target = classify(request)
            if ctx.credentials is not None:
                check_proxy_auth(request.headers.raw_items(), ctx.credentials)
        except RemoteProtocolError:
            self._hand_off(resume)  # the task path classifies again and refuses
            return
        assert isinstance(target, ConnectTarget)  # a CONNECT classifies as one or raises
        # A body on a CONNECT means nothing (RFC 9110 §9.3.6): one that is declared is
        # left to the task path, which takes it and drops it. Without one, the machine's
        # end of message and pause are not asked for: it is not used after the 200 (only
        # its buffer, the bytes after the head).
        if has_content(request.headers.raw_items()):
            self._hand_off(resume)
            return
        try:
            dial: Dialed | PendingDial | None = front.connect_now(target.destination)
        except Proxy64Error as exc:
            self._hand_off(Resume(conn, request=request, dial=exc))
            return
        if not isinstance(dial, Dialed):  # in flight, or must be awaited (a name, a race)
            self._hand_off(Resume(conn, request=request, dial=dial))
            return
        self._established(request, target, dial)

    def _established(self, request: h11.Request, target: ConnectTarget, dialed: Dialed) -> None:
        front = self.front
        self.dialed = dialed
        reply = tunnel_established(request.http_version)
        if reply is None:  # an HTTP version h11 must encode: the task path does it
            self._hand_off(Resume(self.conn, request=request, dial=dialed))
            return
        try:
            # as trio.SocketStream does (a hand-off gets one: set only for a hub tunnel)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            written = os.write(self.fd, reply)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._record(target, dialed)
            self._end(f"client closed before the tunnel started ({exc})")
            return
        if written < len(reply):  # the task path writes the rest, then tunnels
            unsent = reply[written:]
            self._hand_off(Resume(self.conn, request=request, dial=dialed, unsent_reply=unsent))
            return
        if self.conn.trailing_data[0]:
            # Bytes the client sent before our 200 (rare: optimistic clients) reach the
            # destination first; the task path sends them, then relays.
            self._hand_off(Resume(self.conn, request=request, dial=dialed, unsent_reply=b""))
            return
        record = self._record(target, dialed)
        remote = dialed.stream
        assert isinstance(remote, trio.SocketStream)  # connect_now dials sockets only
        client = trio.socket.from_stdlib_socket(self.sock)
        # the watched client fd becomes the tunnel's (no epoll_ctl): see RelayHub.add
        tunnel = front.hub.add(client, remote.socket, record, front.threshold, owner=self)
        self.tunnel = tunnel
        self.stage = Stage.TUNNEL
        settings = front.relay_settings
        assert settings is not None
        if self.timer is not None:
            self.timer.cancel()
        self.timer = front.hub.call_at(tunnel.last_active + settings.idle_timeout, self)

    def _record(self, target: ConnectTarget, dialed: Dialed) -> ConnectionRecord:
        record = ConnectionRecord(
            front_end="http-connect", client=self.client, destination=target.destination
        )
        record.remote = dialed.remote
        record.reached = dialed.reached
        record.egress = dialed.egress
        self.record = record
        return record

    # --- timers: the head's deadline, then the tunnel's idle timeout ---------------------------

    def _expired(self, now: float) -> float | None:
        if self.stage is Stage.HEAD:
            if now < self.deadline:
                return self.deadline
            self._hand_off(Resume(self.conn, timed_out=True))  # 408, or a quiet close
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

    # --- the owned tunnel (a hub TunnelOwner) --------------------------------------------------

    def _tunnel_ended(self, tunnel: HubTunnel) -> None:
        if self.stage is not Stage.TUNNEL:
            return
        if tunnel.ending is Ending.PROMOTED:
            self._leave()
            self.front.spawn(_continue, self, tunnel)
            return
        if tunnel.broken:
            logger.debug("tunnel %s: %s", self.client, tunnel.broken)
        self._end(tunnel.broken or "ok")

    # --- leaving -------------------------------------------------------------------------------

    def _leave(self) -> None:
        if self.stage is Stage.HEAD:
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
        front.spawn(serve_http_connection, stream, front.ctx, self.client, self.slot, resume)

    def _release(self) -> None:
        if self.slot is not None:
            self.front.ctx.connection_slots.release_on_behalf_of(self.slot)
            self.slot = None

    def _end_quietly(self) -> None:
        """The client closed before a whole head: nothing to answer, no record (as the
        task path)."""
        self._leave()
        if self.dialed is not None:  # only after a bug between the dial and the tunnel
            _close(self.dialed)
            self.dialed = None
        self.sock.close()
        self._release()
        self.front.served += 1

    def _end(self, outcome: str) -> None:
        """End a tunnel here: outcome recorded, sockets closed, one line."""
        if self.stage is Stage.GONE and self.record is None:
            return
        if self.stage is not Stage.GONE:
            self._leave()
        record, self.record = self.record, None
        if self.dialed is not None:
            _close(self.dialed)
            self.dialed = None
        self.sock.close()
        self._release()
        self.front.served += 1
        if record is not None:
            if record.outcome == "open":
                record.outcome = outcome
            self.front.ctx.recorder.finish(record)

    def abort(self, outcome: str = "cancelled (proxy64 is shutting down)") -> None:
        """End now (shutdown ran out of grace, or a bug)."""
        if self.stage is Stage.HEAD:
            self._end_quietly()
        elif self.stage is Stage.TUNNEL or self.record is not None:
            self._end(outcome)


def _close(dialed: Dialed) -> None:
    stream = dialed.stream
    assert isinstance(stream, trio.SocketStream)  # connect_now dials sockets only
    stream.socket.close()


async def _continue(connection: _Connection, tunnel: HubTunnel) -> None:
    """A promoted owned tunnel goes on in a task on relay()'s task path (bulk, a full
    destination); the record is finished here, as in http_server._tunnel."""
    front, record, dialed = connection.front, connection.record, connection.dialed
    settings = front.relay_settings
    assert settings is not None and record is not None and dialed is not None
    client = trio.SocketStream(trio.socket.from_stdlib_socket(connection.sock))
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
            record.outcome = f"destination closed: {exc}"
    finally:
        connection._end("ok")
