"""The HTTP session machine (proxy64/proto/http_session.py) without sockets or a clock:
scripted events in, the expected commands out (playbooks), a head trickled one byte at a
time, and hypothesis driving it with arbitrary bytes and event orders. Time is a float."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.defaults import (
    HTTP_DIAL_GRACE,
    HTTP_KEEPALIVE_TIMEOUT,
    HTTP_LINGER_BYTES,
    HTTP_LINGER_TIME,
    HTTP_MAX_HEAD,
)
from proxy64.destination import Destination
from proxy64.errors import DialAttempt, DialCause, DialError, NotAllowedError
from proxy64.proto.http_forward import Exchanged, Forward, OriginFailed, upstream_machine
from proxy64.proto.http_session import (
    HEAD_CUT,
    HttpCommand,
    HttpEvent,
    HttpSession,
    SessionError,
    State,
)
from proxy64.proto.session import (
    NOTHING_SENT,
    ClientLost,
    Close,
    Connected,
    DataReceived,
    Dial,
    DialFailed,
    Finish,
    Receive,
    Record,
    Relay,
    Send,
    Tick,
)

HANDSHAKE, IDLE, CONNECT_TIMEOUT = 10.0, 300.0, 15.0
LOCAL = (IPv6Address("::1"), 40000)
ORIGIN = Destination("origin.test", 80)
OTHER = Destination("other.test", 80)
TUNNEL = Destination("tunnel.test", 443)
ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
REUSE = upstream_machine()  # an origin's machine ready for the next request
LINGER = Close("", linger=True, linger_time=HTTP_LINGER_TIME, linger_bytes=HTTP_LINGER_BYTES)


def state_of(s: HttpSession) -> State:
    """The session's state read afresh: after one `assert s.state is X` mypy narrows the
    attribute and does not know that handle() moves it on."""
    return s.state


def session(**kwargs: object) -> HttpSession:
    options: dict[str, object] = {
        "handshake_timeout": HANDSHAKE,
        "idle_timeout": IDLE,
        "connect_timeout": CONNECT_TIMEOUT,
    }
    options.update(kwargs)
    return HttpSession(**options)  # type: ignore[arg-type]


def get(host: bytes = b"origin.test", extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"GET http://"
        + host
        + b"/x HTTP/"
        + version
        + b"\r\nHost: "
        + host
        + b"\r\n"
        + extra
        + b"\r\n"
    )


CONNECT = b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\n"


def answer(commands: Sequence[HttpCommand]) -> bytes:
    return b"".join(c.data for c in commands if isinstance(c, Send))


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def respond(forward: Forward, body: bytes = b"ok") -> bytes:
    """What the exchange does with the client's machine: take the request's end, answer."""
    conn = forward.conn
    while conn.their_state not in (h11.DONE, h11.MUST_CLOSE):
        event = conn.next_event()
        assert event is not h11.NEED_DATA, "the test gave the whole request"
    head = h11.Response(status_code=200, headers=[(b"Content-Length", b"%d" % len(body))])
    return b"".join(conn.send(e) or b"" for e in (head, h11.Data(data=body), h11.EndOfMessage()))


def dial_error(status_504: bool = False) -> DialError:
    cause = DialCause.TIMEOUT if status_504 else DialCause.REFUSED
    return DialError("origin.test:80", [DialAttempt(IPv4Address("127.0.0.1"), 80, cause, "")])


# --- CONNECT ---------------------------------------------------------------------------------


def test_rfc9110_9_3_6_connect_dials_answers_200_and_relays() -> None:
    s = session()
    assert s.start(0.0) == [Receive()] and s.deadline == HANDSHAKE
    assert s.handle(DataReceived(CONNECT), 1.0) == [
        Record("http-connect", TUNNEL),
        Dial(TUNNEL),
    ]
    assert s.deadline == 1.0 + CONNECT_TIMEOUT + HTTP_DIAL_GRACE
    assert s.handle(Connected(LOCAL), 2.0) == [Send(ESTABLISHED), Relay(early=b"")]
    assert s.deadline == math.inf and s.state is State.CLOSED


def test_connect_early_bytes_go_first_and_a_body_is_dropped() -> None:
    s = session()
    s.start(0.0)
    head = b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
    assert s.handle(DataReceived(head + b"ab"), 0.0) == [Receive()]  # the body's rest
    assert s.handle(DataReceived(b"cdEARLY"), 0.0)[-1] == Dial(TUNNEL)
    assert s.handle(Connected(LOCAL), 0.0) == [Send(ESTABLISHED), Relay(early=b"EARLY")]


def test_http10_connect_gets_connection_close_in_its_200() -> None:
    s = session()
    s.start(0.0)
    s.handle(DataReceived(b"CONNECT tunnel.test:443 HTTP/1.0\r\n\r\n"), 0.0)
    sent = answer(s.handle(Connected(LOCAL), 0.0))
    assert sent == b"HTTP/1.1 200 Connection Established\r\nConnection: close\r\n\r\n"


def test_connect_dial_failure_is_its_status_and_sentence() -> None:
    s = session()
    s.start(0.0)
    s.handle(DataReceived(CONNECT), 0.0)
    error = dial_error()
    commands = s.handle(DialFailed(error), 0.0)
    assert commands[0] == Finish(str(error)) and commands[-1] == LINGER
    assert status(answer(commands)) == 502 and str(error).encode() in answer(commands)


def test_a_denying_rule_is_in_the_log_not_in_the_answer() -> None:
    class Denied(NotAllowedError):
        def reply_text(self) -> str:
            return "not allowed here"

    s = session()
    s.start(0.0)
    s.handle(DataReceived(CONNECT), 0.0)
    commands = s.handle(DialFailed(Denied("rule 3 of /etc/x denies it")), 0.0)
    assert commands[0] == Finish("rule 3 of /etc/x denies it")
    assert status(answer(commands)) == 403 and b"not allowed here" in answer(commands)
    assert b"rule 3" not in answer(commands)


def test_a_dial_that_never_returns_is_504_after_connect_timeout_and_grace() -> None:
    s = session()
    s.start(0.0)
    s.handle(DataReceived(CONNECT), 0.0)
    due = CONNECT_TIMEOUT + HTTP_DIAL_GRACE
    assert s.handle(Tick(), due - 0.001) == []  # early: nothing
    commands = s.handle(Tick(), due)
    message = "cannot connect to tunnel.test:443: timed out"
    assert commands[0] == Finish(message) and commands[-1] == LINGER
    assert status(answer(commands)) == 504 and message.encode() in answer(commands)


def test_connect_client_lost_while_the_200_is_written() -> None:
    s = session()
    s.start(0.0)
    s.handle(DataReceived(CONNECT), 0.0)
    s.handle(Connected(LOCAL), 0.0)
    assert s.handle(ClientLost("reset"), 0.0) == [Close("client closed before the tunnel started")]


# --- heads: deadlines, errors, refusals -----------------------------------------------------


def test_408_only_when_some_of_a_head_arrived_and_each_has_its_log_line() -> None:
    s = session()
    s.start(0.0)
    # nothing came: a quiet close, and the connection's one line says why
    assert s.handle(Tick(), HANDSHAKE) == [
        Record("http", waited=HANDSHAKE),  # the line's duration: the whole wait
        Finish("no request within 10 s"),
        Close(""),
    ]
    s = session()
    s.start(0.0)
    assert s.handle(DataReceived(b"GET http://a/ HT"), 1.0) == [Receive()]
    assert s.deadline == HANDSHAKE  # the head's deadline does not move with its bytes
    commands = s.handle(Tick(), HANDSHAKE)
    problem = "the request head was not complete after 10 s"
    assert commands[:2] == [Record("http", waited=HANDSHAKE), Finish(problem)]
    assert status(answer(commands)) == 408 and commands[-1] == LINGER
    assert problem.encode() in answer(commands)


@pytest.mark.parametrize(
    ("head", "code", "outcome"),
    [
        (
            b"GET\x01 / HTTP/1.1\r\n\r\n",
            400,
            'the request head is not valid HTTP/1.1 (illegal request line: "GET\\\\x01 / '
            'HTTP/1.1")',
        ),
        (
            b"GET http://a/ HTTP/1.1\r\nX: " + b"a" * HTTP_MAX_HEAD,
            431,
            f"the request head is larger than {HTTP_MAX_HEAD} bytes",
        ),
        (
            b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "Only Transfer-Encoding: chunked is supported: send the body with Content-Length "
            "or chunked",
        ),
    ],
)
def test_head_errors_their_status_and_outcome(head: bytes, code: int, outcome: str) -> None:
    s = session()
    s.start(0.0)
    commands = s.handle(DataReceived(head), 0.0)
    assert commands[:2] == [Record("http"), Finish(outcome)]
    assert status(answer(commands)) == code and commands[-1] == LINGER


def test_refusal_line_names_the_request() -> None:
    s = session()
    s.start(0.0)
    commands = s.handle(DataReceived(b"GET /path HTTP/1.1\r\nHost: a\r\n\r\n"), 0.0)
    text = "this is a proxy: send the full URL (GET http://host/path) or CONNECT host:port"
    assert commands[:2] == [Record("http"), Finish(f"refused GET /path: {text}")]
    assert status(answer(commands)) == 400 and commands[-1] == LINGER


def test_client_closing_before_a_head_is_a_quiet_close_with_its_log_line() -> None:
    for data, outcome in (
        (b"", NOTHING_SENT),
        (b"GET http://a/ HTTP/1.1\r\n", HEAD_CUT),
    ):
        s = session()
        s.start(0.0)
        commands = s.handle(DataReceived(data), 1.5)
        if data:
            commands = s.handle(DataReceived(b""), 2.0)
        waited = 2.0 if data else 1.5
        assert commands == [Record("http", waited=waited), Finish(outcome), Close("")]


def test_503_when_no_slot_is_free() -> None:
    s = session(refusal="all 8 connections are in use")
    commands = s.start(0.0)
    assert status(answer(commands)) == 503 and commands[-1] == LINGER
    assert b"all 8 connections are in use; try again later" in answer(commands)


AUTH = b"Proxy-Authorization: Basic " + base64.b64encode(b"alice:right") + b"\r\n"
WRONG = b"Proxy-Authorization: Basic " + base64.b64encode(b"alice:wrong") + b"\r\n"


def test_rfc9110_11_7_2_proxy_auth_407_and_accepted() -> None:
    creds = {"alice": "right"}
    s = session(credentials=creds)
    s.start(0.0)
    commands = s.handle(DataReceived(CONNECT.replace(b"\r\n\r\n", b"\r\n" + WRONG + b"\r\n")), 0)
    sent = answer(commands)
    assert status(sent) == 407 and b'Proxy-Authenticate: Basic realm="proxy64"' in sent
    assert commands[1] == Finish(
        "refused CONNECT tunnel.test:443: proxy authentication failed: wrong user name or password"
    )
    s = session(credentials=creds)
    s.start(0.0)
    ok = s.handle(DataReceived(CONNECT.replace(b"\r\n\r\n", b"\r\n" + AUTH + b"\r\n")), 0.0)
    assert ok[-1] == Dial(TUNNEL)


def test_the_auth_gate_holds_the_answer_as_a_deadline() -> None:
    asked: list[bool] = []

    def gate(ok: bool) -> float:
        asked.append(ok)
        return 2.0

    s = session(credentials={"alice": "right"}, auth_answer=gate)
    s.start(0.0)
    assert s.handle(DataReceived(get(extra=WRONG)), 1.0) == []
    assert s.state is State.AUTH_HOLD and s.deadline == 3.0 and asked == [False]
    assert s.handle(Tick(), 2.9) == []
    assert status(answer(s.handle(Tick(), 3.0))) == 407
    s = session(credentials={"alice": "right"}, auth_answer=gate)
    s.start(0.0)
    assert s.handle(DataReceived(get(extra=AUTH)), 1.0) == []  # a success is held too
    assert s.handle(Tick(), 3.0) == [Record("http", ORIGIN), Dial(ORIGIN)]


# --- forwarding ----------------------------------------------------------------------------


def forwarding(s: HttpSession, data: bytes, now: float = 0.0) -> Forward:
    """Feed a request; dial if asked; the Forward command."""
    commands = s.handle(DataReceived(data), now)
    if isinstance(commands[-1], Dial):
        commands = s.handle(Connected(LOCAL), now)
    forward = commands[-1]
    assert isinstance(forward, Forward), commands
    return forward


def test_keep_alive_reuses_one_upstream_and_replaces_it_on_host_change() -> None:
    s = session()
    s.start(0.0)
    assert s.handle(DataReceived(get()), 0.0) == [Record("http", ORIGIN), Dial(ORIGIN)]
    (forward,) = s.handle(Connected(LOCAL), 0.0)
    assert isinstance(forward, Forward) and forward.target.destination == ORIGIN
    assert forward.target.request.target == b"/x"
    respond(forward)
    assert s.handle(Exchanged(REUSE), 1.0) == [Receive(answered=True)]
    assert s.state is State.KEEP_ALIVE and s.deadline == 1.0 + HTTP_KEEPALIVE_TIMEOUT
    again = s.handle(DataReceived(get()), 2.0)  # same origin: no dial
    assert len(again) == 1 and isinstance(again[0], Forward)
    assert again[0].upstream is REUSE and again[0].sent == 1 and forward.sent == 0
    respond(again[0])
    s.handle(Exchanged(REUSE), 2.0)
    assert s.handle(DataReceived(get(b"other.test")), 3.0) == [
        Finish("ok"),
        Record("http", OTHER),
        Dial(OTHER),
    ]


def test_an_upstream_that_cannot_be_reused_ends_and_is_dialed_again() -> None:
    s = session()
    s.start(0.0)
    respond(forwarding(s, get()))
    assert s.handle(Exchanged(None), 0.0) == [Finish("ok"), Receive(answered=True)]
    assert s.handle(DataReceived(get()), 0.0) == [Record("http", ORIGIN), Dial(ORIGIN)]


def test_keep_alive_idle_closes_and_ends_the_upstream_ok() -> None:
    s = session(idle_timeout=5.0)
    s.start(0.0)
    respond(forwarding(s, get()))
    s.handle(Exchanged(REUSE), 1.0)
    assert s.deadline == 6.0  # min(HTTP_KEEPALIVE_TIMEOUT, idle)
    assert s.handle(Tick(), 6.0) == [Close("ok")]


def test_http10_request_without_keep_alive_closes_after_its_response() -> None:
    s = session()
    s.start(0.0)
    respond(forwarding(s, get(version=b"1.0")))
    assert s.handle(Exchanged(REUSE), 0.0) == [Close("ok")]


def test_pipelined_requests_answered_in_order() -> None:
    s = session()
    s.start(0.0)
    first = forwarding(s, get() + get(b"other.test"))
    respond(first)
    assert s.handle(Exchanged(REUSE), 0.0) == [
        Finish("ok"),
        Record("http", OTHER),
        Dial(OTHER),
    ]


@pytest.mark.parametrize(("retryable", "method"), [(True, b"GET"), (False, b"POST")])
def test_rfc9110_9_2_2_stale_upstream_retried_once_for_idempotent(
    retryable: bool, method: bytes
) -> None:
    s = session()
    s.start(0.0)
    respond(forwarding(s, get()))
    s.handle(Exchanged(REUSE), 0.0)
    request = get().replace(b"GET", method)
    if method == b"POST":
        request = request.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
    forwarding(s, request)
    stale = OriginFailed("origin.test:80 closed the connection before answering", stale=True)
    commands = s.handle(stale, 0.0)
    if not retryable:
        assert commands[0] == Finish(stale.message) and status(answer(commands)) == 502
        return
    assert commands == [Finish("ok"), Record("http", ORIGIN), Dial(ORIGIN)]
    (forward,) = s.handle(Connected(LOCAL), 0.0)
    assert isinstance(forward, Forward)
    commands = s.handle(stale, 0.0)  # a second stale failure is not retried
    assert commands[0] == Finish(stale.message) and status(answer(commands)) == 502


def test_origin_failure_after_a_response_started_is_a_reset() -> None:
    s = session()
    s.start(0.0)
    forward = forwarding(s, get())
    forward.conn.next_event()
    forward.conn.send(h11.Response(status_code=200, headers=[(b"Content-Length", b"9")]))
    failed = OriginFailed("origin.test:80 closed the connection in the middle of the response")
    failed = OriginFailed(failed.message, responded=True)
    assert s.handle(failed, 0.0) == [Finish(failed.message), Close("", reset=True)]


def test_504_when_the_origin_stays_silent() -> None:
    s = session()
    s.start(0.0)
    forwarding(s, get())
    commands = s.handle(OriginFailed("origin.test:80 sent nothing for 300 s", 504), 0.0)
    assert status(answer(commands)) == 504 and commands[-1] == LINGER


def test_client_lost_during_the_exchange_ends_the_upstream_with_why() -> None:
    s = session()
    s.start(0.0)
    forwarding(s, get())
    reason = "client closed the connection before the exchange was complete"
    assert s.handle(ClientLost(reason), 0.0) == [Finish(reason), Close("")]


def test_rfc9110_10_1_1_100_continue_answered_by_the_proxy() -> None:
    s = session()
    s.start(0.0)
    s.handle(DataReceived(get(extra=b"Expect: 100-continue\r\nContent-Length: 3\r\n")), 0.0)
    commands = s.handle(Connected(LOCAL), 0.0)
    assert commands[0] == Send(b"HTTP/1.1 100 \r\n\r\n")
    assert isinstance(commands[1], Forward)


def test_rfc9112_9_3_next_cycle_after_a_body_outside_h11() -> None:
    s = session()
    s.start(0.0)
    body = b"x" * 100
    forward = forwarding(s, get(extra=b"Content-Length: 100\r\n").replace(b"GET", b"PUT") + body)
    # the exchange moved the body itself: h11 never saw it, the client's machine stays in
    # SEND_BODY; it answers, and the bytes after the body are the next request
    forward.conn.send(h11.Response(status_code=204, headers=[]))
    forward.conn.send(h11.EndOfMessage())
    commands = s.handle(Exchanged(REUSE, after_request=(get(), False)), 0.0)
    assert isinstance(commands[0], Forward) and commands[0].conn is not forward.conn
    s2 = session()
    s2.start(0.0)
    forward = forwarding(s2, get(extra=b"Connection: close\r\n"))
    respond(forward)
    assert s2.handle(Exchanged(REUSE, response_outside=True), 0.0) == [Close("ok")]


def test_rfc9112_9_3_after_an_outside_response_the_next_machine_waits() -> None:
    s = session()
    s.start(0.0)
    forward = forwarding(s, get())
    respond(forward)  # its body went outside h11: the client's machine stays in SEND_BODY
    assert s.handle(Exchanged(REUSE, response_outside=True), 1.0) == [Receive(answered=True)]
    assert s.state is State.KEEP_ALIVE and s.deadline == 1.0 + HTTP_KEEPALIVE_TIMEOUT
    assert s.handle(DataReceived(get()[:7]), 2.0) == [Receive()]  # a fresh machine's head
    assert state_of(s) is State.HEAD and s.conn is not forward.conn
    (again,) = s.handle(DataReceived(get()[7:]), 2.0)
    assert isinstance(again, Forward) and again.conn is s.conn and again.sent == 1
    respond(again)
    assert s.handle(Exchanged(REUSE, response_outside=True), 3.0) == [Receive(answered=True)]
    assert s.handle(DataReceived(b""), 4.0) == [Close("ok")]  # closed between requests
    for late in (Tick(), ClientLost("gone")):
        idle = session()
        idle.start(0.0)
        respond(forwarding(idle, get()))
        idle.handle(Exchanged(REUSE, response_outside=True), 1.0)
        assert idle.handle(late, math.inf) == [Close("ok")]


def normalized(commands: Sequence[HttpCommand]) -> list[object]:
    """Commands compared across runs: a Forward by what it forwards, Receive left out."""
    return [
        ("forward", c.target.destination, c.target.request.target, c.sent)
        if isinstance(c, Forward)
        else c
        for c in commands
        if not isinstance(c, Receive)
    ]


FOLLOW = st.lists(
    st.sampled_from([get(), get()[:9], get()[9:], get(b"other.test"), b"junk\r\n\r\n", b"\r\n"]),
    max_size=4,
)


@settings(max_examples=200)
@given(FOLLOW)
@example([get()[:9], get()[9:]])
@example([b"junk\r\n\r\n"])
@example([get(), get()])
def test_bytes_after_an_outside_response_decide_the_same_early_or_late(
    follow: list[bytes],
) -> None:
    """What the client sent after its request gives the same decisions whether it was
    already buffered when the exchange ended (the fresh machine made at once) or arrives
    afterwards, one read at a time (the fresh machine made by the first bytes)."""
    early = session()
    early.start(0.0)
    forward = forwarding(early, get())
    respond(forward)
    for piece in follow:
        forward.conn.receive_data(piece)
    early_commands = early.handle(Exchanged(REUSE, response_outside=True), 1.0)

    late = session()
    late.start(0.0)
    respond(forwarding(late, get()))
    late_commands = late.handle(Exchanged(REUSE, response_outside=True), 1.0)
    for piece in follow:
        if late.state not in (State.KEEP_ALIVE, State.HEAD):
            break  # the executor reads no more: the request is on its way, or answered
        late_commands += late.handle(DataReceived(piece), 1.0)
    assert normalized(early_commands) == normalized(late_commands)
    assert early.state is late.state


def test_max_forwards_0_answered_locally_then_keep_alive() -> None:
    s = session()
    s.start(0.0)
    commands = s.handle(
        DataReceived(b"OPTIONS http://a/ HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n"), 0.0
    )
    sent = answer(commands)
    assert status(sent) == 200 and b"Allow: GET" in sent and commands[-1] == Receive()
    assert s.state is State.KEEP_ALIVE


def test_a_held_upstream_ends_before_a_refusal_line() -> None:
    s = session()
    s.start(0.0)
    respond(forwarding(s, get()))
    s.handle(Exchanged(REUSE), 0.0)
    commands = s.handle(DataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), 0.0)
    assert commands[:3] == [Finish("ok"), Record("http"), commands[2]]
    assert isinstance(commands[2], Finish) and commands[2].outcome.startswith("refused GET /x")


def test_an_unexpected_event_is_a_named_error() -> None:
    s = session()
    s.start(0.0)
    with pytest.raises(SessionError, match="reading a request head: unexpected Connected"):
        s.handle(Connected(LOCAL), 0.0)


# --- trickle and fuzz ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [CONNECT, get(extra=b"X-A: 1\r\n"), b"GET /x HTTP/1.1\r\n\r\n", b"BAD\x00\r\n\r\n"],
)
def test_head_trickled_one_byte_at_a_time_gives_the_same_commands(head: bytes) -> None:
    whole = session()
    whole.start(0.0)
    expected = whole.handle(DataReceived(head), 0.0)
    s = session()
    s.start(0.0)
    got: list[HttpCommand] = [Receive()]
    for i in range(len(head)):
        assert got == [Receive()], f"after {i} bytes"
        got = s.handle(DataReceived(head[i : i + 1]), 0.0)
    assert got == expected


TERMINAL = (Relay, Close)
DECLARED = {400, 403, 407, 408, 431, 501, 502, 503, 504, 505, 508}


def drive(s: HttpSession, chunks: list[bytes], choices: list[int]) -> list[HttpCommand]:
    """A fair executor making random choices: reads come from chunks (then EOF), dials
    connect or fail, exchanges answer or fail, time jumps to the deadline."""
    out = list(s.start(0.0))
    pending = list(out)
    now, picks = 0.0, iter(choices)
    for _ in range(200):
        if any(isinstance(c, TERMINAL) for c in out):
            break
        choice = next(picks, 0)
        last = pending[-1] if pending else None
        event: HttpEvent
        if choice % 7 == 6:
            event = ClientLost("reset")
        elif choice % 7 == 5 and s.deadline < math.inf:
            now = s.deadline
            event = Tick()
        elif isinstance(last, Receive):
            event = DataReceived(chunks.pop(0) if chunks else b"")
        elif isinstance(last, Dial):
            event = Connected(LOCAL) if choice % 2 else DialFailed(dial_error(choice % 3 == 0))
        elif isinstance(last, Forward):
            if choice % 3 == 0:
                event = OriginFailed("origin broke", responded=False, stale=choice % 4 == 0)
            elif choice % 5 == 1 and last.conn.our_state is h11.SEND_RESPONSE:
                # a response head went out, then the origin broke: nothing more may be said
                last.conn.send(h11.Response(status_code=200, headers=[(b"Content-Length", b"5")]))
                pending = s.handle(OriginFailed("origin broke", responded=True), now)
                assert pending == [Finish("origin broke"), Close("", reset=True)]
                out.extend(pending)
                continue
            else:
                conn = last.conn
                try:
                    respond(last)
                    event = Exchanged(upstream_machine() if choice % 2 == 0 else None)
                except (AssertionError, h11.ProtocolError):
                    event = ClientLost("client closed the connection before the exchange")
                del conn
        elif s.deadline < math.inf:  # the auth hold: only time goes on
            now = s.deadline
            event = Tick()
        else:
            raise AssertionError(f"the machine waits for nothing: {pending}")
        pending = s.handle(event, now)
        assert s.deadline >= now, "a deadline in the past"
        out.extend(pending)
    return out


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([CONNECT, get(), get(b"other.test"), b"\r\n", b"HTTP/1.1"]),
        ),
        max_size=8,
    ),
    choices=st.lists(st.integers(0, 20), max_size=40),
    auth=st.booleans(),
)
@example(chunks=[get() + get()], choices=[1, 2, 1], auth=False)
@example(chunks=[CONNECT], choices=[1], auth=True)
def test_fuzz_only_declared_commands_one_terminal_answers_before_responses(
    chunks: list[bytes], choices: list[int], auth: bool
) -> None:
    s = session(credentials={"alice": "right"} if auth else None, auth_answer=lambda ok: 0.5)
    commands = drive(s, list(chunks), choices)
    assert all(
        isinstance(c, (Send, Receive, Record, Finish, Dial, Relay, Close, Forward))
        for c in commands
    )
    terminals = [c for c in commands if isinstance(c, TERMINAL)]
    assert len(terminals) == 1  # the client's bytes run out in EOF: it always ends
    assert commands[-1] is terminals[0] and s.state is State.CLOSED
    opened = 0
    for c in commands:  # every Record finished once, by a Finish or the terminal
        if isinstance(c, Record):
            assert opened == 0
            opened = 1
        elif isinstance(c, Finish):
            assert opened == 1
            opened = 0
    # every answer the proxy wrote itself parses as one HTTP response with a declared
    # status, or is a 200/100 the protocol calls for
    for c in commands:
        if isinstance(c, Send) and c.data.startswith(b"HTTP/1."):
            assert status(c.data) in DECLARED | {100, 200}


def test_a_finished_session_leaves_no_reference_cycle() -> None:
    """Freed by reference counting alone (the collector's walk is latency under load)."""
    import gc

    gc.collect()
    gc.disable()
    try:
        for data in (CONNECT, get(), b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"):
            s = session()
            s.start(0.0)
            commands = s.handle(DataReceived(data), 0.0)
            if isinstance(commands[-1], Dial):
                commands = s.handle(Connected(LOCAL), 0.0)
            if isinstance(commands[-1], Forward):
                respond(commands[-1])
                s.handle(Exchanged(None), 0.0)
            del s, commands
        assert gc.collect() == 0
    finally:
        gc.enable()
