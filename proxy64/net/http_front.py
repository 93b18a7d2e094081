# The HTTP front end driven by the relay hub: no trio task for a CONNECT that need not wait.
#
# The connection's life (slot, timers, leaving, hand-off, end, owned tunnel, a promoted
# tunnel's continuation) is hub_front.py's, shared with the SOCKS front end; here is what
# is HTTP: an accepted client's bytes go into the same h11 machine the task path uses, the
# head is classified by the same proto/httpproxy.py, and a CONNECT (RFC 9110 §9.3.6) whose
# destination the dialer can connect without waiting (Dialer.connect_now: a literal, or a
# name whose DNS64 answer is cached, connected inside connect(2)) gets h11's 200 at once
# and becomes a hub tunnel owned by this connection. Everything else goes on in a task on
# the task path (http_server.serve_http_connection with a Resume) from exactly where it
# stopped: every forwarded request (http://), every refusal and error answer, a head that
# is not complete by the deadline (408), a dial in flight or refused, a slot refused by
# --max-connections (503), a 200 the client did not take at once. So replies, outcomes
# and the log line are the task path's own.
#
# Invariants (besides hub_front.py's): a connection has a record only once its tunnel is
# dialed (a client that closes before a whole head gets no line, as on the task path);
# bytes the client sent before our 200 are sent to the destination by the task path.

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import h11
import trio

from proxy64.defaults import HTTP_BODY_CHUNK
from proxy64.errors import Proxy64Error, RemoteProtocolError
from proxy64.net.auth_gate import auth_held
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.http_server import Resume, new_machine, serve_http_connection
from proxy64.net.hub_front import HubConnection, HubFront, Stage, client_text
from proxy64.net.listeners import Spawn
from proxy64.proto.http_headers import has_content
from proxy64.proto.httpproxy import ConnectTarget, check_proxy_auth, classify, tunnel_established

logger = logging.getLogger(__name__)


class HttpFront(HubFront["_Connection"]):
    """One per HTTP listener set: the connections it holds without a task (listeners.Front)."""

    def __init__(self, ctx: ProxyContext, spawn: Spawn) -> None:
        super().__init__(ctx, spawn, _Connection, "HTTP", logger)


class _Connection(HubConnection):
    """One HTTP client while no task holds it."""

    __slots__ = ("conn", "request", "target")

    front: HttpFront
    bug_outcome = "internal error in the HTTP front end (a bug in proxy64)"

    def __init__(self, front: HttpFront, sock: socket.socket, address: Any) -> None:
        self.conn = new_machine()
        self.request: h11.Request | None = None  # a CONNECT whose dial is in flight
        self.target: ConnectTarget | None = None
        # as http_server's _peer_name; the record is made once the tunnel is dialed
        super().__init__(front, sock, client_text(address, "unknown"), None)

    def start(self) -> None:
        self.sock.setblocking(False)
        if self.slot is None:  # the task path answers 503
            self._hand_off(Resume(self.conn))
            return
        self._begin()

    # --- the request head -------------------------------------------------------------------

    def _readable(self) -> None:
        if self.stage is not Stage.HANDSHAKE:
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
            self._end("")  # no record: no line (as the task path)
            return
        self._request(event)

    def _request(self, request: h11.Request) -> None:
        """A CONNECT the hub can carry goes on here; anything else on the task path."""
        ctx, front, conn = self.front.ctx, self.front, self.conn
        resume = Resume(conn, request=request)
        if request.method != b"CONNECT" or front.relay_settings is None:
            self._hand_off(resume)
            return
        if auth_held(ctx, self.client):  # the task path holds this address's answers
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
            dial: Dialed | PendingDial | None = front.connect_now(target.destination, self.client)
        except Proxy64Error as exc:
            self._hand_off(Resume(conn, request=request, dial=exc))
            return
        if isinstance(dial, PendingDial):  # a real network: the hub waits for it
            self.request, self.target = request, target
            self._dial_in_hub(dial)
            return
        if dial is None:  # it must be awaited (a name not cached, a race): a task
            self._hand_off(Resume(conn, request=request))
            return
        self._established(request, target, dial)

    def _dial_done(self, dialed: Dialed) -> None:
        assert self.request is not None and self.target is not None
        self._established(self.request, self.target, dialed)

    def _dial_failed(self, error: Proxy64Error) -> None:
        self._hand_off(Resume(self.conn, request=self.request, dial=error))

    def _established(self, request: h11.Request, target: ConnectTarget, dialed: Dialed) -> None:
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
        self._enter_tunnel(remote.socket, record, b"")

    def _record(self, target: ConnectTarget, dialed: Dialed) -> ConnectionRecord:
        record = ConnectionRecord(
            front_end="http-connect", client=self.client, destination=target.destination
        )
        record.reached_by(dialed)
        self.record = record
        return record

    # --- the protocol's part of the shared life -------------------------------------------

    def _timed_out(self) -> None:
        self._hand_off(Resume(self.conn, timed_out=True))  # 408, or a quiet close

    def _hand_off(self, resume: Resume) -> None:
        """Continue on the task path with what was consumed (the connection leaves here)."""
        front, stream = self.front, self._to_task()
        front.spawn(serve_http_connection, stream, front.ctx, self.client, self.slot, resume)

    def _relay_lost(self, exc: BaseException) -> str:
        return f"destination closed: {exc}"  # as http_server's tunnel
