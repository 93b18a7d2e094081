"""handshake_step: the SOCKS handshake policy shared by the task path and the hub front end.

Table tests per outcome, a one-byte trickle that must give the same bytes and request as
one read, and a hypothesis fuzz whose invariant is: only the declared outcomes, never an
exception, and the bytes owed so far are always returned with the outcome."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import RemoteProtocolError
from proxy64.proto.socks4 import Socks4Request
from proxy64.proto.socks5 import NEED_DATA, Command, Request
from proxy64.proto.socks_dispatch import Closed, Outcome, handshake_step, machine_for

Step = tuple[bytes, Outcome]

CONNECT = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
AUTH_OK = b"\x01\x05alice\x06s3cret"
CREDS = {"alice": "s3cret"}


def run(data: bytes, credentials: dict[str, str] | None = None, *, eof: bool = False) -> Step:
    machine = machine_for(data[0], require_auth=credentials is not None)
    machine.receive_data(data)
    if eof:
        machine.receive_data(b"")
    return handshake_step(machine, credentials)


def test_rfc1928_3_greeting_and_request_in_one_read() -> None:
    out, outcome = run(b"\x05\x01\x00" + CONNECT + b"early")
    assert out == b"\x05\x00"
    assert outcome == Request(Command.CONNECT, Destination(IPv4Address("127.0.0.1"), 80))


def test_greeting_alone_needs_data_and_owes_the_method() -> None:
    assert run(b"\x05\x01\x00") == (b"\x05\x00", NEED_DATA)


def test_rfc1928_3_no_acceptable_method_is_closed_with_0xff() -> None:
    out, outcome = run(b"\x05\x01\x80")
    assert out == b"\x05\xff"
    assert outcome == Closed("the client offered only methods proxy64 does not support: 0x80")


def test_rfc1929_2_success_then_request() -> None:
    out, outcome = run(b"\x05\x01\x02" + AUTH_OK + CONNECT, CREDS)
    assert out == b"\x05\x02\x01\x00"
    assert isinstance(outcome, Request)


def test_rfc1929_2_failure_is_closed_with_status_1() -> None:
    out, outcome = run(b"\x05\x01\x02\x01\x05alice\x01x", CREDS)
    assert out == b"\x05\x02\x01\x01"
    assert outcome == Closed("authentication failed for user 'alice' (RFC 1929)")


def test_auth_required_but_not_offered() -> None:
    out, outcome = run(b"\x05\x01\x00", CREDS)
    assert out == b"\x05\xff"
    assert isinstance(outcome, Closed) and "authentication required" in outcome.reason


def test_close_before_authenticating_and_before_request() -> None:
    assert run(b"\x05\x01\x02", CREDS, eof=True) == (
        b"\x05\x02",
        Closed("client closed the connection before authenticating"),
    )
    assert run(b"\x05\x01\x00", eof=True) == (
        b"\x05\x00",
        Closed("client closed the connection before sending its request"),
    )


def test_bad_request_after_greeting_keeps_the_owed_method_byte() -> None:
    machine = machine_for(5, require_auth=False)
    machine.receive_data(b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")  # BIND
    out, outcome = handshake_step(machine, None)
    assert out == b"\x05\x00"
    assert isinstance(outcome, RemoteProtocolError)
    assert machine.send_error(outcome) == b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"


def test_socks4_request() -> None:
    out, outcome = run(b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00")
    assert out == b""
    assert isinstance(outcome, Socks4Request)
    assert outcome.destination == Destination(IPv4Address("127.0.0.1"), 80)


def test_one_byte_trickle_gives_the_same_bytes_and_request() -> None:
    data = b"\x05\x02\x00\x02" + CONNECT
    machine = machine_for(data[0], require_auth=False)
    sent = b""
    outcome: object = NEED_DATA
    for i in range(len(data)):
        machine.receive_data(data[i : i + 1])
        out, outcome = handshake_step(machine, None)
        sent += out
        if outcome is not NEED_DATA:
            assert i == len(data) - 1
    assert sent == b"\x05\x00"
    assert isinstance(outcome, Request)


@given(st.binary(min_size=1, max_size=80), st.booleans(), st.booleans())
def test_fuzz_only_declared_outcomes(data: bytes, auth: bool, eof: bool) -> None:
    try:
        machine = machine_for(data[0], require_auth=auth)
    except RemoteProtocolError:
        return
    machine.receive_data(data)
    if eof:
        machine.receive_data(b"")
    out, outcome = handshake_step(machine, CREDS if auth else None)
    assert isinstance(out, bytes)
    assert outcome is NEED_DATA or isinstance(
        outcome, Request | Socks4Request | Closed | RemoteProtocolError
    )
    if eof:
        assert outcome is not NEED_DATA
