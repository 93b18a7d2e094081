"""The session machine of one HTTP proxy client connection (pure, sans-I/O).

It holds every decision of the connection's life and says them in the vocabulary of
proto/session.py (plus proto/http_forward.py for the forwarding exchange): reading request
heads with the client's h11 machine (h11.SERVER, heads bounded by HTTP_MAX_HEAD), what a
head means (proto/httpproxy.py), proxy authentication (RFC 9110 §11.7.2) with the answer
held as the auth gate says, a CONNECT's tunnel (RFC 9110 §9.3.6), a forwarded request's
upstream (dial, reuse, or a retry on a new connection, RFC 9110 §9.2.2), local answers
(Max-Forwards: 0, RFC 9110 §7.6.2), error answers with their status and sentence,
keep-alive and the next request (RFC 9112 §9.3), and every deadline as a value.

Invariants:
- Exactly one terminal command (`Relay` or `Close`) ends what the machine asks; after it,
  any event but a late `ClientLost` is a bug (`SessionError`).
- An error answer is only sent while no response has started on the client's machine;
  after that the connection is closed, with a reset when a response was cut (a cut
  response must not look complete).
- Every open record is finished once: a refused request is a record of its own
  ("refused METHOD target: why"); an upstream's record ends when it is not reused.
- A head that never completes gets 408 only if some of it arrived; else a quiet close.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import h11

from proxy64.defaults import (
    HTTP_KEEPALIVE_TIMEOUT,
)
from proxy64.errors import RemoteProtocolError
from proxy64.proto.http_client_conn import (
    encode_whole,
    fresh_machine,
    head_problem,
    new_machine,
    persists,
    printable,
)
from proxy64.proto.http_forward import Exchanged, Forward, OriginFailed, upstream_machine
from proxy64.proto.http_headers import has_content
from proxy64.proto.http_session_base import (
    HttpCommand,
    HttpEvent,
    SessionBase,
    SessionError,
    State,
)
from proxy64.proto.httpproxy import (
    ConnectTarget,
    ForwardTarget,
    LocalAnswer,
    check_proxy_auth,
    classify,
    tunnel_established,
)
from proxy64.proto.session import (
    NOTHING_SENT,
    ClientLost,
    Close,
    Command,
    Connected,
    DataReceived,
    DialFailed,
    Event,
    Receive,
    Relay,
    Send,
    Tick,
)

__all__ = ["HEAD_CUT", "HttpCommand", "HttpEvent", "HttpSession", "SessionError", "State"]

HEAD_CUT = "client closed the connection in the middle of a request head"


class HttpSession(SessionBase):
    """One HTTP proxy client connection's session machine (see the module's docstring;
    its state and endings are SessionBase's)."""

    __slots__ = ()

    # --- the executor's entry points --------------------------------------------------------

    def start(self, now: float) -> list[HttpCommand]:
        if self.refusal is not None:
            return self._answer_error(503, f"{self.refusal}; try again later")
        self.deadline = now + self.handshake_timeout
        return [Receive()]  # nothing has arrived yet: h11 would only say NEED_DATA

    def handle(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, Tick) and now < self.deadline:
            return []  # early: nothing is due yet
        return _HANDLERS[self.state._value_](self, event, now)

    # --- reading a request head -------------------------------------------------------------

    def _on_head(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, Tick):
            if self.conn.trailing_data[0]:
                problem = f"the request head was not complete after {self.handshake_timeout:g} s"
                waited = self._head_waited(now)
                return [*self._refused(problem, waited), *self._answer_error(408, problem)]
            if self.heads:
                return self._close("ok")
            # RFC 9110 §15.5.9 allows a 408 here; a quiet close is what a client that
            # opened a connection ahead of time (and never used it) expects
            return self._unanswered(f"no request within {self.handshake_timeout:g} s", now)
        if isinstance(event, ClientLost):
            return self._close("ok")
        self._feed(event)
        return self._read_head(now)

    def _on_keep_alive(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, (Tick, ClientLost)):
            return self._close("ok")  # idle too long, or gone
        if self.spent:  # the next request's machine is made by its first bytes
            if not isinstance(event, DataReceived):
                raise SessionError(self.state, event)
            if not event.data:
                return self._close("ok")  # the client closed between requests
            self.conn, self.spent = new_machine(), False
        self._feed(event)
        if not self.conn.trailing_data[0]:
            return self._close("ok")  # the client closed between requests
        self.state, self.deadline = State.HEAD, now + self.handshake_timeout
        return self._read_head(now)

    def _read_head(self, now: float) -> list[HttpCommand]:
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            if self.conn.trailing_data[1]:  # the client vanished: nothing to answer
                return self._unanswered(HEAD_CUT, now)
            problem = head_problem(exc)
            return [*self._refused(problem), *self._answer_error(exc.error_status_hint, problem)]
        if event is h11.NEED_DATA:
            return [Receive()]
        if not isinstance(event, h11.Request):  # ConnectionClosed
            return self._close("ok") if self.heads else self._unanswered(NOTHING_SENT, now)
        self.request = event
        self.heads += 1
        try:
            target = classify(event)
        except RemoteProtocolError as exc:
            return self._refuse(exc)
        self.target = target
        if self.credentials is None:
            return self._go(now)
        try:
            check_proxy_auth(event.headers.raw_items(), self.credentials)
        except RemoteProtocolError as exc:
            self.held = exc
        hold = self.auth_answer(self.held is None) if self.auth_answer is not None else 0.0
        if hold > 0:
            self.state, self.deadline = State.AUTH_HOLD, now + hold
            return []
        return self._after_auth(now)

    def _on_auth_hold(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, ClientLost):
            return self._close("ok")
        if not isinstance(event, Tick):
            raise SessionError(self.state, event)
        return self._after_auth(now)

    def _after_auth(self, now: float) -> list[HttpCommand]:
        if self.held is not None:
            held, self.held = self.held, None
            return self._refuse(held)
        return self._go(now)

    def _refuse(self, exc: RemoteProtocolError) -> list[HttpCommand]:
        assert self.request is not None
        method = self.request.method.decode("ascii", "replace")
        outcome = f"refused {method} {printable(self.request.target)}: {exc}"
        return [*self._refused(outcome), *self._answer_error(exc.http_status, str(exc))]

    def _go(self, now: float) -> list[HttpCommand]:
        """What the classified request asks for."""
        target = self.target
        if isinstance(target, ConnectTarget):
            self.state, self.deadline = State.CONNECT_BODY, now + self.handshake_timeout
            request = self.request
            assert request is not None
            if not has_content(request.headers.raw_items()):
                # No body: h11's end of message and pause need not be asked for (its
                # machine is not used after the 200, only its buffer: the early bytes).
                return self._dial_tunnel(target, now)
            return self._connect_body(now)
        if isinstance(target, LocalAnswer):
            self.state, self.deadline = State.LOCAL_ANSWER, now + self.idle_timeout
            return self._local_answer(now)
        assert isinstance(target, ForwardTarget)
        self.attempt = 1
        return self._to_upstream(target, now)

    # --- CONNECT -------------------------------------------------------------------------

    def _on_connect_body(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, (Tick, ClientLost)):
            return self._close("ok")  # stalled or gone after its head: just close
        self._feed(event)
        return self._connect_body(now)

    def _connect_body(self, now: float) -> list[HttpCommand]:
        """Take the CONNECT's end of message: h11 then pauses, waiting for our answer; a
        body on a CONNECT has no meaning (RFC 9110 §9.3.6) and is dropped."""
        try:
            while (event := self.conn.next_event()) is not h11.PAUSED:
                if event is h11.NEED_DATA:
                    return [Receive()]
                if isinstance(event, h11.ConnectionClosed):
                    return self._close("ok")
        except h11.RemoteProtocolError:
            return self._close("ok")  # the client broke its body: just close
        target = self.target
        assert isinstance(target, ConnectTarget)
        return self._dial_tunnel(target, now)

    def _dial_tunnel(self, target: ConnectTarget, now: float) -> list[HttpCommand]:
        self.state, self.upstream = State.CONNECT_DIAL, None
        ended = self._finish("ok")  # a held upstream is not needed by a tunnel
        record = self._record("http-connect", target.destination)
        return [*ended, *record, *self._dial(target.destination, now)]

    def _established(self) -> list[HttpCommand]:
        """The 200 (h11's own bytes), then the tunnel with what the client sent early."""
        assert self.request is not None
        # classify() lets a CONNECT through in HTTP/1.0 and 1.1 only: both encoded once
        reply = tunnel_established(self.request.http_version)
        assert reply is not None
        self._terminal("client closed before the tunnel started")
        self.record_open = False  # the relay ends it
        return [Send(reply), Relay(early=self.conn.trailing_data[0])]

    # --- the dial's result -----------------------------------------------------------------

    def _on_dial(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, Connected):
            self.deadline = math.inf
            if self.state is State.CONNECT_DIAL:
                return self._established()
            self.upstream, self.upstream_sent = self.destination, 0
            self.upstream_conn = upstream_machine()
            return self._forward()
        if isinstance(event, DialFailed):
            error = event.error
            return self._dial_failed(error.http_status, str(error), error.reply_text())
        if isinstance(event, Tick):
            message = f"cannot connect to {self.destination}: timed out"
            return self._dial_failed(504, message, message)
        if isinstance(event, ClientLost):
            return self._close(event.reason)
        raise SessionError(self.state, event)

    def _dial_failed(self, status: int, message: str, told: str) -> list[HttpCommand]:
        """The record keeps the error's sentence; the answer may name less (a denying
        rule is in the log, not told to the client)."""
        return [*self._finish(message), *self._answer_error(status, told)]

    # --- forwarding ----------------------------------------------------------------------

    def _to_upstream(self, target: ForwardTarget, now: float) -> list[HttpCommand]:
        """Reuse the held upstream if it goes to the same origin and is idle, else end it
        and dial a new one."""
        if self.upstream is not None:
            if self.upstream == target.destination and self.upstream_conn is not None:
                return self._forward()
            self.upstream = None
        ended = self._finish("ok")
        self.state = State.FORWARD_DIAL
        record = self._record("http", target.destination)
        return [*ended, *record, *self._dial(target.destination, now)]

    def _forward(self) -> list[HttpCommand]:
        target = self.target
        assert isinstance(target, ForwardTarget)
        self.state, self.deadline = State.FORWARDING, math.inf
        commands: list[HttpCommand] = []
        if target.expects_continue and self.conn.they_are_waiting_for_100_continue:
            # RFC 9110 §10.1.1: the proxy answers 100 itself; the origin's 1xx are dropped
            informational = h11.InformationalResponse(status_code=100, headers=[])
            commands.append(Send(self.conn.send(informational) or b""))
        upstream, self.upstream_conn = self.upstream_conn, None  # lent to the exchange
        assert upstream is not None
        commands.append(Forward(target, self.conn, upstream, self.upstream_sent))
        return commands

    def _on_forwarding(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        target = self.target
        assert isinstance(target, ForwardTarget)
        if isinstance(event, Exchanged):
            ended: list[HttpCommand] = []
            self.upstream_sent += 1
            if event.upstream is not None:
                self.upstream_conn = event.upstream
            else:
                self.upstream = None
                ended = self._finish("ok")
            return [*ended, *self._next_cycle(event, now)]
        if isinstance(event, OriginFailed):
            self.upstream = None
            if event.stale and target.retryable and self.attempt == 1:
                # The origin closed a kept-alive connection as it was reused: an ordinary
                # end for that connection; RFC 9110 §9.2.2 lets an idempotent request
                # without content be sent again on a new one.
                self.attempt = 2
                return [*self._finish("ok"), *self._to_upstream(target, now)]
            ended = self._finish(event.message)
            if not event.responded:
                return [*ended, *self._answer_error(event.status, event.message)]
            self._terminal("")
            return [*ended, Close("", reset=True)]  # a cut response must not look complete
        if isinstance(event, ClientLost):
            self.upstream = None
            return [*self._finish(event.reason), *self._close("")]
        raise SessionError(self.state, event)

    # --- answering locally (Max-Forwards: 0) -----------------------------------------------

    def _on_local_answer(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, (Tick, ClientLost)):
            return self._close("ok")
        self._feed(event)
        return self._local_answer(now)

    def _local_answer(self, now: float) -> list[HttpCommand]:
        """Answer as the final recipient, discarding any request content."""
        answer = self.target
        assert isinstance(answer, LocalAnswer)
        try:
            while not isinstance(event := self.conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    return [Receive()]
                if not isinstance(event, h11.Data):
                    return self._close("ok")
        except h11.RemoteProtocolError:
            return self._close("ok")
        data = encode_whole(self.conn, answer.response, answer.body)
        return [Send(data), *self._next_cycle(None, now)]

    # --- the next request -----------------------------------------------------------------

    def _next_cycle(self, exchanged: Exchanged | None, now: float) -> list[HttpCommand]:
        """Ready the client's machine for its next request (RFC 9112 §9.3), or close."""
        request = self.request
        assert request is not None
        after = exchanged.after_request if exchanged is not None else None
        outside = exchanged.response_outside if exchanged is not None else False
        if not persists(self.conn, request, after, outside):
            return self._close("ok")
        self.request = self.target = None
        if after is None and not outside:  # h11 carried the cycle: its machine goes on
            self.conn.start_next_cycle()
            data, closed = self.conn.trailing_data
        else:  # a body went outside h11: a fresh machine takes what followed it
            data, closed = after if after is not None else self.conn.trailing_data
            if data:
                self.conn = fresh_machine(data, closed)
            else:  # made when the client's next bytes arrive (most clients just close)
                self.spent = True
        if data:  # pipelined: the next head is here already
            self.state, self.deadline = State.HEAD, now + self.handshake_timeout
            return self._read_head(now)
        if closed:
            return self._close("ok")  # the client closed between requests
        self.state = State.KEEP_ALIVE
        self.deadline = now + min(HTTP_KEEPALIVE_TIMEOUT, self.idle_timeout)
        # a forwarded response went to the client outside a Send: it answers that first
        return [Receive(answered=exchanged is not None)]


# One handler per state (the state's events in, its commands out), keyed by the state's
# value: a str hashes in C, an Enum member in Python.
_HANDLERS: dict[str, Callable[[HttpSession, Event, float], list[Command]]] = {
    State.HEAD.value: HttpSession._on_head,
    State.KEEP_ALIVE.value: HttpSession._on_keep_alive,
    State.AUTH_HOLD.value: HttpSession._on_auth_hold,
    State.CONNECT_BODY.value: HttpSession._on_connect_body,
    State.CONNECT_DIAL.value: HttpSession._on_dial,
    State.FORWARD_DIAL.value: HttpSession._on_dial,
    State.FORWARDING.value: HttpSession._on_forwarding,
    State.LOCAL_ANSWER.value: HttpSession._on_local_answer,
    State.CLOSED.value: HttpSession._on_closed,
}
