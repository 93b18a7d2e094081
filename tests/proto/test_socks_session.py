"""The SOCKS session machine (proto/socks_session.py) without sockets: every decision of a
connection's life as event → commands playbooks on a mock clock (plain floats), a
one-byte trickle that must decide as one read does, and hypothesis runs of arbitrary
bytes and events whose invariants are: only declared commands, exactly one terminal
command, a deadline never in the past."""

from __future__ import annotations

import math
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.defaults import SOCKS_LINGER_BYTES, SOCKS_LINGER_TIME
from proxy64.destination import Destination
from proxy64.errors import DialAttempt, DialCause, DialError, ResolutionError
from proxy64.proto.session import (
    NOTHING_SENT,
    ClientLost,
    Close,
    Command,
    Connected,
    DataReceived,
    Dial,
    DialFailed,
    Event,
    Finish,
    Receive,
    Record,
    Relay,
    Send,
    Tick,
)
from proxy64.proto.socks5 import Socks5Server
from proxy64.proto.socks_session import (
    HELD_TOO_LONG,
    RFC1929_FAILURE,
    Associate,
    SocksSession,
)

GREETING = b"\x05\x01\x00"
CONNECT = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"  # 127.0.0.1:80
DEST = Destination(IPv4Address("127.0.0.1"), 80)
LOCAL = (IPv4Address("192.0.2.7"), 4242)
SUCCESS = b"\x05\x00\x00\x01" + LOCAL[0].packed + (4242).to_bytes(2, "big")
AUTH_GREETING = b"\x05\x01\x02"
CREDS = {"alice": "s3cret"}
TIMEOUT = 10.0
TIMED_OUT = f"SOCKS handshake not finished within {TIMEOUT:g} s"
TERMINAL = (Close, Relay, Associate)


def lingering(outcome: str) -> Close:
    return Close(outcome, True, SOCKS_LINGER_TIME, SOCKS_LINGER_BYTES)


def auth(user: str, password: str) -> bytes:
    u, p = user.encode(), password.encode()
    return b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p


Step = tuple[Event | None, float, Sequence[Command]]  # None: start(now)


def play(session: SocksSession, steps: Sequence[Step]) -> SocksSession:
    """mitmproxy's Playbook shape: each event (at its time) must give exactly these
    commands, in order."""
    for number, (event, now, expected) in enumerate(steps):
        got = session.start(now) if event is None else session.handle(event, now)
        assert got == list(expected), f"step {number}: {event!r} at {now}"
    return session


def session(**options: object) -> SocksSession:
    options.setdefault("handshake_timeout", TIMEOUT)
    return SocksSession(**options)  # type: ignore[arg-type]


START: Step = (None, 0.0, [Record("socks5"), Receive()])


# --- CONNECT ---------------------------------------------------------------------------


def test_rfc1928_connect_reply_carries_the_outbound_address_and_early_data_goes_first() -> None:
    s = play(
        session(),
        [
            START,
            (DataReceived(GREETING), 0.1, [Send(b"\x05\x00"), Receive()]),
            (
                DataReceived(CONNECT + b"early"),
                0.2,
                [Record("socks5", DEST), Dial(DEST, bound_address=True)],
            ),
        ],
    )
    assert s.deadline == math.inf  # the handshake is over: the dialer bounds the dial
    play(s, [(Connected(LOCAL), 3.0, [Send(SUCCESS), Relay(b"early")])])


def test_pipelined_greeting_and_request_dial_in_one_step() -> None:
    play(
        session(),
        [
            START,
            (
                DataReceived(GREETING + CONNECT),
                0.0,
                [Send(b"\x05\x00"), Record("socks5", DEST), Dial(DEST, bound_address=True)],
            ),
        ],
    )


def test_socks4a_records_its_version_and_is_granted_0x5a() -> None:
    request = b"\x04\x01\x00\x50\x00\x00\x00\x01u\x00example.org\x00"
    dest = Destination("example.org", 80)
    s = play(
        session(),
        [
            START,
            (
                DataReceived(request),
                0.0,
                [Record("socks4"), Record("socks4", dest), Dial(dest, bound_address=True)],
            ),
        ],
    )
    reply = b"\x00\x5a" + (4242).to_bytes(2, "big") + LOCAL[0].packed
    play(s, [(Connected(LOCAL), 0.5, [Send(reply), Relay(b"")])])


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ResolutionError("nowhere.test", "NXDOMAIN"), 0x04),
        (DialError("x", [DialAttempt(IPv6Address("::1"), 80, DialCause.REFUSED, "no")]), 0x05),
    ],
)
def test_rfc1928_6_dial_failure_is_its_errors_reply_then_linger(
    error: Exception, code: int
) -> None:
    s = play(
        session(),
        [
            START,
            (
                DataReceived(GREETING + CONNECT),
                0.0,
                [Send(b"\x05\x00"), Record("socks5", DEST), Dial(DEST, bound_address=True)],
            ),
        ],
    )
    assert isinstance(error, (ResolutionError, DialError))
    play(
        s,
        [
            (
                DialFailed(error),
                2.0,
                [Send(b"\x05" + bytes([code]) + b"\x00\x01" + bytes(6)), lingering(str(error))],
            )
        ],
    )


def test_rfc1928_7_udp_associate_is_handed_to_the_helper_without_a_destination_record() -> None:
    request = b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
    s = session()
    play(s, [START, (DataReceived(GREETING), 0.0, [Send(b"\x05\x00"), Receive()])])
    (record, associate) = s.handle(DataReceived(request), 0.1)
    assert record == Record("udp")
    assert isinstance(associate, Associate) and isinstance(associate.machine, Socks5Server)
    assert associate.requested == Destination(IPv4Address(0), 0)


# --- refusals and closes -----------------------------------------------------------------


def test_not_a_socks_client_gets_no_reply_and_no_linger() -> None:
    s = session()
    s.start(0.0)
    (close,) = s.handle(DataReceived(b"GET / HTTP/1.1\r\n"), 0.0)
    assert isinstance(close, Close) and not close.linger
    assert close.outcome.startswith("not a SOCKS client: the first byte is 0x47")


def test_client_closing_before_any_byte_is_closed_with_linger() -> None:
    play(session(), [START, (DataReceived(b""), 0.0, [lingering(NOTHING_SENT)])])


def test_rfc1928_3_no_acceptable_method_then_linger() -> None:
    play(
        session(credentials=CREDS),
        [
            START,
            (
                DataReceived(GREETING),
                0.0,
                [
                    Send(b"\x05\xff"),
                    lingering(
                        "authentication required: the client offered no-auth "
                        "but not username/password (RFC 1929); give the client "
                        "the proxy's user and password"
                    ),
                ],
            ),
        ],
    )


def test_rfc1929_failure_status_then_linger() -> None:
    play(
        session(credentials=CREDS),
        [
            START,
            (DataReceived(AUTH_GREETING), 0.0, [Send(b"\x05\x02"), Receive()]),
            (
                DataReceived(auth("alice", "wrong")),
                0.1,
                [Send(b"\x01\x01"), lingering("authentication failed for user 'alice' (RFC 1929)")],
            ),
        ],
    )


def test_max_connections_refusal_comes_after_the_handshake_socks5_0x01_socks4_0x5b() -> None:
    refusal = "too many connections (--max-connections 1)"
    play(
        session(refusal=refusal),
        [
            START,
            (
                DataReceived(GREETING + CONNECT),
                0.0,
                [
                    Send(b"\x05\x00"),
                    Record("socks5", DEST),
                    Send(b"\x05\x01\x00\x01" + bytes(6)),
                    lingering(refusal),
                ],
            ),
        ],
    )
    socks4 = b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00"
    play(
        session(refusal=refusal),
        [
            START,
            (
                DataReceived(socks4),
                0.0,
                [
                    Record("socks4"),
                    Record("socks4", DEST),
                    Send(b"\x00\x5b" + bytes(6)),
                    lingering(refusal),
                ],
            ),
        ],
    )


def test_rfc1928_6_handshake_deadline_ttl_expired_reply_or_plain_close() -> None:
    partial = play(
        session(),
        [START, (DataReceived(b"\x05\x01\x00\x05"), 1.0, [Send(b"\x05\x00"), Receive()])],
    )
    assert partial.deadline == TIMEOUT
    play(
        partial,
        [
            (Tick(), TIMEOUT - 1, []),  # early: nothing
            (Tick(), TIMEOUT, [Send(b"\x05\x06\x00\x01" + bytes(6)), lingering(TIMED_OUT)]),
        ],
    )
    play(session(), [START, (Tick(), TIMEOUT, [Close(TIMED_OUT)])])  # sent nothing
    play(  # half a greeting: the §3 refusal
        session(),
        [
            START,
            (DataReceived(b"\x05"), 0.0, [Receive()]),
            (Tick(), TIMEOUT, [Send(b"\x05\xff"), lingering(TIMED_OUT)]),
        ],
    )


def test_a_refusal_not_written_within_the_linger_time_is_dropped() -> None:
    s = play(
        session(),
        [
            START,
            (DataReceived(b"\x05"), 0.0, [Receive()]),
            (Tick(), TIMEOUT, [Send(b"\x05\xff"), lingering(TIMED_OUT)]),
        ],
    )
    assert s.deadline == TIMEOUT + SOCKS_LINGER_TIME
    play(
        s,
        [
            (Tick(), TIMEOUT + SOCKS_LINGER_TIME / 2, []),
            (Tick(), TIMEOUT + SOCKS_LINGER_TIME, [Close(TIMED_OUT)]),
        ],
    )


def test_client_lost_keeps_a_decided_outcome() -> None:
    s = play(
        session(credentials=CREDS),
        [START, (DataReceived(AUTH_GREETING), 0.0, [Send(b"\x05\x02"), Receive()])],
    )
    play(
        s,
        [(ClientLost("client reset the connection"), 0.1, [Close("client reset the connection")])],
    )
    refusing = play(
        session(refusal="full"),
        [
            START,
            (
                DataReceived(GREETING + CONNECT),
                0.0,
                [
                    Send(b"\x05\x00"),
                    Record("socks5", DEST),
                    Send(b"\x05\x01\x00\x01" + bytes(6)),
                    lingering("full"),
                ],
            ),
        ],
    )
    play(refusing, [(ClientLost("client reset the connection"), 0.1, [Close("full")])])


# --- the held RFC 1929 answer ------------------------------------------------------------


def test_held_answer_is_a_deadline_then_the_handshake_goes_on() -> None:
    asked: list[bool] = []

    def hold(ok: bool) -> float:
        asked.append(ok)
        return 2.0

    s = play(
        session(credentials=CREDS, hold=hold),
        [
            START,
            (DataReceived(AUTH_GREETING), 0.0, [Send(b"\x05\x02"), Receive()]),
            (DataReceived(auth("alice", "s3cret") + CONNECT), 1.0, []),  # nothing read meanwhile
        ],
    )
    assert s.deadline == 3.0 and asked == [True]
    play(
        s,
        [
            (Tick(), 2.5, []),
            (
                Tick(),
                3.0,
                [Send(b"\x01\x00"), Record("socks5", DEST), Dial(DEST, bound_address=True)],
            ),
        ],
    )


def test_held_failure_is_sent_at_its_time_then_linger() -> None:
    s = play(
        session(credentials=CREDS, hold=lambda ok: 1.5),
        [
            START,
            (DataReceived(AUTH_GREETING + auth("alice", "nope")), 0.0, [Send(b"\x05\x02")]),
        ],
    )
    play(
        s,
        [
            (
                Tick(),
                1.5,
                [Send(b"\x01\x01"), lingering("authentication failed for user 'alice' (RFC 1929)")],
            )
        ],
    )


def test_answer_due_after_the_handshake_deadline_is_a_failure_now() -> None:
    play(
        session(credentials=CREDS, hold=lambda ok: TIMEOUT),
        [
            START,
            (
                DataReceived(AUTH_GREETING + auth("alice", "s3cret")),
                0.5,
                [Send(b"\x05\x02"), Send(RFC1929_FAILURE), lingering(HELD_TOO_LONG)],
            ),
        ],
    )


# --- one byte at a time ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "credentials"),
    [
        (GREETING + CONNECT + b"early", None),
        (AUTH_GREETING + auth("alice", "s3cret") + CONNECT, CREDS),
        (b"\x04\x01\x00\x50\x00\x00\x00\x01u\x00example.org\x00", None),
        (GREETING + b"\x05\x01\x00\x03\x0bexample.org\x01\xbb", None),
    ],
)
def test_trickle_one_byte_at_a_time_decides_as_one_read(
    data: bytes, credentials: dict[str, str] | None
) -> None:
    def run(chunks: list[bytes]) -> tuple[bytes, list[Command]]:
        s = session(credentials=credentials)
        commands = s.start(0.0)
        sent, other = b"", list[Command]()
        pending = list(chunks)
        while commands:
            command = commands.pop(0)
            if isinstance(command, Send):
                sent += command.data
            elif isinstance(command, Receive):
                commands += s.handle(DataReceived(pending.pop(0) if pending else b""), 0.0)
            else:
                other.append(command)
            if isinstance(command, Dial):
                commands += s.handle(Connected(LOCAL), 0.0)
        return sent, other

    whole = run([data])
    trickled = run([data[i : i + 1] for i in range(len(data))])
    assert trickled[0] == whole[0]
    dials = [c for c in whole[1] if isinstance(c, Dial)]
    assert dials and [c for c in trickled[1] if isinstance(c, Dial)] == dials


# --- hypothesis: arbitrary bytes and events ----------------------------------------------

DECLARED = (Send, Receive, Record, Finish, Dial, Relay, Close, Associate)


PREFIXES = [b"", b"\x05", b"\x04", GREETING, AUTH_GREETING, GREETING + b"\x05", GREETING + CONNECT]


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[str, bytes, float]]:
    """(what happens, the bytes if it is data, how much later)."""
    chunks = draw(st.lists(st.binary(max_size=24), min_size=1, max_size=8))
    chunks[0] = draw(st.sampled_from(PREFIXES)) + chunks[0]
    kinds = st.sampled_from(["data", "data", "data", "tick", "lost", "failed"])
    return [(draw(kinds), chunk, draw(st.floats(0, 4))) for chunk in chunks]


def waiting_for(commands: list[Command]) -> str:
    if any(isinstance(c, Receive) for c in commands):
        return "read"
    return "dial" if any(isinstance(c, Dial) for c in commands) else "deadline"


@settings(max_examples=400, deadline=None)
@given(
    script=scripts(),
    credentials=st.sampled_from([None, CREDS]),
    have_slot=st.booleans(),
    hold=st.sampled_from([0.0, 1.0, 30.0]),
)
def test_fuzz_only_declared_commands_one_terminal_and_a_future_deadline(
    script: list[tuple[str, bytes, float]],
    credentials: dict[str, str] | None,
    have_slot: bool,
    hold: float,
) -> None:
    """An executor's feeding (data after a Receive, a dial's result after a Dial, a Tick
    at the deadline, a lost client) of arbitrary bytes, until the terminal command."""
    refusal = None if have_slot else "full"
    s = session(credentials=credentials, refusal=refusal, hold=lambda ok: hold)
    now = 0.0
    commands = s.start(now)
    terminals = 0
    steps = iter(script)
    for _ in range(len(script) + 50):
        assert all(isinstance(c, DECLARED) for c in commands), commands
        terminals += sum(isinstance(c, TERMINAL) for c in commands)
        if terminals:
            break
        assert s.deadline > now  # a deadline in the past would be fed Tick for ever
        waiting = waiting_for(commands)
        kind, chunk, later = next(steps, ("end", b"", 0.0))
        now += later
        event: Event
        if now >= s.deadline:  # the executor's timer comes first
            now = s.deadline
            event = Tick()
        elif waiting == "dial":
            if kind == "data":
                event = Connected(LOCAL)
            else:
                event = DialFailed(ResolutionError("nowhere.test", "NXDOMAIN"))
        elif kind == "lost":
            event = ClientLost("client reset the connection")
        elif waiting == "read" and kind == "data":
            event = DataReceived(chunk)
        else:  # nothing else can come: the deadline
            assert s.deadline != math.inf, (waiting, s.phase)
            now = max(now, s.deadline)
            event = Tick()
        commands = s.handle(event, now)
    assert terminals == 1 and sum(isinstance(c, TERMINAL) for c in commands) == 1
