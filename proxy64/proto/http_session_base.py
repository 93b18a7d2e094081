"""The state of one HTTP proxy client connection's session machine (pure, sans-I/O), and
the commands that end its records and the connection: a refused request's own record,
an upstream's record, an error answer with a lingering close (RFC 9112 §9.6), a quiet
close or a reset. proto/http_session.py holds the decisions that lead there.

Invariants: a Record is finished once (by a Finish or the terminal command's outcome);
an error answer is encoded only while no response has started on the client's machine.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping

import h11

from proxy64.defaults import HTTP_DIAL_GRACE, HTTP_LINGER_BYTES, HTTP_LINGER_TIME
from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError
from proxy64.proto.http_client_conn import encode_error, new_machine
from proxy64.proto.httpproxy import Target
from proxy64.proto.session import (
    ClientLost,
    Close,
    Command,
    DataReceived,
    Dial,
    Event,
    Finish,
    Record,
    Send,
)

HttpEvent = Event  # with HTTP's Awaited: Exchanged, OriginFailed (proto/http_forward.py)
HttpCommand = Command  # with HTTP's Await: Forward


class State(enum.Enum):
    HEAD = "reading a request head"
    KEEP_ALIVE = "idle between requests"
    AUTH_HOLD = "holding the answer to a Proxy-Authorization"
    CONNECT_BODY = "taking a CONNECT's end of message"
    CONNECT_DIAL = "dialing a CONNECT's destination"
    FORWARD_DIAL = "dialing an origin"
    FORWARDING = "forwarding a request"
    LOCAL_ANSWER = "taking the content of a request answered locally"
    CLOSED = "closed"


class SessionError(LocalProtocolError):
    """An event the machine cannot take in its state: the executor's bug."""

    def __init__(self, state: State, event: object) -> None:
        super().__init__(f"HTTP session {state.value}: unexpected {event!r}")


class SessionBase:
    """What an HTTP session machine holds (its settings and the state of one client
    connection) and how it gives its records, error answers and endings.
    `refusal`: why no connection slot was free (then 503); `auth_answer(ok)`: seconds to
    hold the answer to an authentication (the auth gate)."""

    __slots__ = (
        "__weakref__",
        "attempt",
        "auth_answer",
        "conn",
        "connect_timeout",
        "credentials",
        "deadline",
        "destination",
        "handshake_timeout",
        "heads",
        "held",
        "idle_timeout",
        "lost_outcome",
        "record_open",
        "refusal",
        "request",
        "spent",
        "state",
        "target",
        "upstream",
        "upstream_conn",
        "upstream_sent",
    )

    def __init__(
        self,
        *,
        handshake_timeout: float,
        idle_timeout: float,
        connect_timeout: float,
        credentials: Mapping[str, str] | None = None,
        auth_answer: Callable[[bool], float] | None = None,
        refusal: str | None = None,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.credentials = credentials
        self.auth_answer = auth_answer
        self.refusal = refusal
        self.conn = new_machine()
        # the client's machine is done with (a body went outside it) and nothing followed
        # yet: idle between requests, the next request's machine is made by its bytes
        self.spent = False
        self.state = State.HEAD
        self.deadline = math.inf
        self.request: h11.Request | None = None  # the current cycle's request head
        self.heads = 0  # request heads read on this connection
        self.target: Target | None = None
        self.held: RemoteProtocolError | None = None  # a 407 the auth hold delays
        self.destination: Destination | None = None  # the one being dialed
        self.upstream: Destination | None = None  # the held upstream (its record open)
        self.record_open = False  # a Record given and not finished yet
        # a terminal command given, and the Send before it failed: the outcome to close with
        self.lost_outcome = ""
        # the held upstream's h11 machine while it is idle and reusable (None: busy, or
        # not reusable), and the requests it carried
        self.upstream_conn: h11.Connection | None = None
        self.upstream_sent = 0
        self.attempt = 0  # of the current forwarded request (a stale retry is the 2nd)

    # --- what the decisions share ---------------------------------------------------------

    def _feed(self, event: HttpEvent) -> None:
        if not isinstance(event, DataReceived):
            raise SessionError(self.state, event)
        if not self.conn.trailing_data[1]:  # h11 refuses data after EOF
            self.conn.receive_data(event.data)

    def _dial(self, destination: Destination, now: float) -> list[HttpCommand]:
        # a dialer that never returns gets a 504 once its own bound and a grace have passed
        self.destination = destination
        self.deadline = now + self.connect_timeout + HTTP_DIAL_GRACE
        return [Dial(destination)]

    # --- endings ---------------------------------------------------------------------------

    def _on_closed(self, event: HttpEvent, now: float) -> list[HttpCommand]:
        if isinstance(event, ClientLost):
            # a Send before the terminal command failed, and the executor dropped what
            # followed it: the terminal command again, with what the failure means
            return [Close(self.lost_outcome)]
        raise SessionError(self.state, event)

    def _record(
        self, front_end: str, destination: Destination | None = None, waited: float = 0.0
    ) -> list[HttpCommand]:
        self.record_open = True
        return [Record(front_end, destination, waited)]

    def _finish(self, outcome: str) -> list[HttpCommand]:
        """The open record (a held upstream's, a dial's) ends with outcome."""
        if not self.record_open:
            return []
        self.record_open = False
        return [Finish(outcome)]

    def _refused(self, outcome: str, waited: float = 0.0) -> list[HttpCommand]:
        """A request refused before any destination: still the connection's one log line
        (a held upstream's record ends first); `waited`: how long its head took."""
        self.upstream = None
        return [*self._finish("ok"), *self._record("http", waited=waited), *self._finish(outcome)]

    def _head_waited(self, now: float) -> float:
        """How long the request head being read has been awaited (its deadline is its
        start plus handshake_timeout)."""
        started = self.deadline - self.handshake_timeout
        return max(0.0, now - started) if math.isfinite(started) else 0.0

    def _unanswered(self, outcome: str, now: float) -> list[HttpCommand]:
        """A connection that ends without a request to answer still has its log line."""
        return [*self._refused(outcome, self._head_waited(now)), *self._close("")]

    def _terminal(self, lost_outcome: str) -> None:
        self.state, self.deadline, self.lost_outcome = State.CLOSED, math.inf, lost_outcome

    def _answer_error(self, status: int, message: str) -> list[HttpCommand]:
        """A whole error answer, then a lingering close (RFC 9112 §9.6); only while no
        response has started (else just the close). A held upstream's record ends "ok"."""
        self.upstream = None
        commands = self._finish("ok")
        data = encode_error(self.conn, status, message)
        if data is None:
            return [*commands, *self._close("")]
        self._terminal("")
        linger = Close(
            "", linger=True, linger_time=HTTP_LINGER_TIME, linger_bytes=HTTP_LINGER_BYTES
        )
        return [*commands, Send(data), linger]

    def _close(self, outcome: str) -> list[HttpCommand]:
        """End without an answer; outcome ends the open record (a held upstream's "ok")."""
        self.upstream = None
        outcome = outcome if self.record_open else ""
        self.record_open = False
        self._terminal(outcome)
        return [Close(outcome)]
