"""SOCKS5 machine (RFC 1928, RFC 1929): tables, scripted playbooks, trickle and fuzz."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply
from proxy64.proto.socks5 import (
    NEED_DATA,
    AuthReply,
    AuthRequest,
    Command,
    ConnectionClosed,
    Greeting,
    Method,
    MethodSelection,
    Reply,
    Request,
    Socks5Server,
    State,
    credentials_match,
    describe_methods,
    select_method,
)

GREETING_NOAUTH = b"\x05\x01\x00"
CONNECT_V4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"  # 127.0.0.1:80
CONNECT_NAME = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"  # example.com:443


def established(data: bytes = b"") -> tuple[Socks5Server, Request]:
    m = Socks5Server()
    m.receive_data(GREETING_NOAUTH + data)
    assert m.next_event() == Greeting((0,))
    assert m.send(MethodSelection(Method.NO_AUTH)) == b"\x05\x00"
    event = m.next_event()
    assert isinstance(event, Request)
    return m, event


def request_error(request: bytes) -> RemoteProtocolError:
    m = Socks5Server()
    m.receive_data(GREETING_NOAUTH)
    m.next_event()
    m.send(MethodSelection(Method.NO_AUTH))
    m.receive_data(request)
    with pytest.raises(RemoteProtocolError) as info:
        m.next_event()
    reply = m.send_error(info.value)
    assert reply[:2] == bytes([5, info.value.socks_reply])
    assert m.state is State.CLOSED
    return info.value


# --- Requests: every ATYP and command (RFC 1928 §4, §5) -------------------------------

REQUESTS = [
    (CONNECT_V4, Command.CONNECT, Destination(IPv4Address("127.0.0.1"), 80)),
    (CONNECT_NAME, Command.CONNECT, Destination("example.com", 443)),
    (
        b"\x05\x01\x00\x04" + IPv6Address("2001:db8::1").packed + b"\x00\x16",
        Command.CONNECT,
        Destination(IPv6Address("2001:db8::1"), 22),
    ),
    (b"\x05\x01\x00\x03\x0cExample.COM.\x00\x50", Command.CONNECT, Destination("example.com", 80)),
    (
        b"\x05\x01\x00\x03\x09127.0.0.1\x00\x50",
        Command.CONNECT,
        Destination(IPv4Address("127.0.0.1"), 80),
    ),
    (b"\x05\x01\x00\x03\x03::1\x00\x50", Command.CONNECT, Destination(IPv6Address("::1"), 80)),
    (b"\x05\x01\x00\x03\x05[::1]\x00\x50", Command.CONNECT, Destination(IPv6Address("::1"), 80)),
    (
        b"\x05\x01\x00\x04" + IPv6Address("::ffff:192.0.2.1").packed + b"\x00\x50",
        Command.CONNECT,
        Destination(IPv4Address("192.0.2.1"), 80),
    ),
    (
        b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00",
        Command.UDP_ASSOCIATE,
        Destination(IPv4Address("0.0.0.0"), 0),
    ),
    (b"\x05\x01\x00\x03\x09under_sc.\x00\x35", Command.CONNECT, Destination("under_sc", 53)),
]


@pytest.mark.parametrize(("wire", "command", "destination"), REQUESTS)
def test_rfc1928_4_requests(wire: bytes, command: Command, destination: Destination) -> None:
    m, event = established(wire)
    assert event == Request(command, destination)
    assert m.state is State.REPLY


BAD_REQUESTS = [
    (b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", SocksReply.GENERAL_FAILURE, "version 5"),
    (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", SocksReply.COMMAND_NOT_SUPPORTED, "BIND"),
    (b"\x05\x09", SocksReply.COMMAND_NOT_SUPPORTED, "unknown SOCKS5 command 0x09"),
    (b"\x05\x01\x01\x01", SocksReply.GENERAL_FAILURE, "reserved byte"),
    (b"\x05\x01\x00\x02", SocksReply.ADDRESS_TYPE_NOT_SUPPORTED, "ATYP 0x02"),
    (b"\x05\x01\x00\x05", SocksReply.ADDRESS_TYPE_NOT_SUPPORTED, "ATYP 0x05"),
    (b"\x05\x01\x00\x03\x00\x00\x50", SocksReply.GENERAL_FAILURE, "empty domain name"),
    (b"\x05\x01\x00\x03\x01.\x00\x50", SocksReply.GENERAL_FAILURE, "1 to 253"),
    (b"\x05\x01\x00\x03\xff" + b"a" * 255 + b"\x00\x50", SocksReply.GENERAL_FAILURE, "255"),
    (b"\x05\x01\x00\x03\x40" + b"a" * 64 + b"\x00\x50", SocksReply.GENERAL_FAILURE, "label"),
    (b"\x05\x01\x00\x03\x04a..b\x00\x50", SocksReply.GENERAL_FAILURE, "empty label"),
    (b"\x05\x01\x00\x03\x03a b\x00\x50", SocksReply.GENERAL_FAILURE, "0x20"),
    (b"\x05\x01\x00\x03\x03\xc3\xa9a\x00\x50", SocksReply.GENERAL_FAILURE, "IDNA"),
    (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", SocksReply.GENERAL_FAILURE, "port 0"),
]


@pytest.mark.parametrize(("wire", "code", "words"), BAD_REQUESTS)
def test_rfc1928_6_bad_requests_get_their_reply(wire: bytes, code: SocksReply, words: str) -> None:
    error = request_error(wire)
    assert error.socks_reply == code
    assert words in str(error)


def test_over_long_name_message_is_readable() -> None:
    name = ".".join(["a" * 60] * 4)  # 243 chars, labels fine
    _, event = established(b"\x05\x01\x00\x03" + bytes([len(name)]) + name.encode() + b"\x00\x50")
    assert event.destination.host == name
    long_name = ".".join(["a" * 63] * 4)  # 255 chars
    error = request_error(b"\x05\x01\x00\x03\xff" + long_name.encode() + b"\x00\x50")
    assert "255 characters" in str(error) and "RFC 1035" in str(error)


# --- Greeting and method selection (RFC 1928 §3) ---------------------------------------

SELECTIONS = [
    ((0,), False, Method.NO_AUTH),
    ((2, 0), False, Method.NO_AUTH),
    ((2,), False, Method.USERNAME_PASSWORD),
    ((1,), False, Method.NO_ACCEPTABLE),
    ((0,), True, Method.NO_ACCEPTABLE),
    ((0, 2), True, Method.USERNAME_PASSWORD),
    ((0x80, 0x81), True, Method.NO_ACCEPTABLE),
]


@pytest.mark.parametrize(("offered", "require_auth", "expected"), SELECTIONS)
def test_rfc1928_3_method_selection(
    offered: tuple[int, ...], require_auth: bool, expected: Method
) -> None:
    assert select_method(offered, require_auth=require_auth) is expected


def test_rfc1928_3_no_acceptable_method_closes() -> None:
    m = Socks5Server(require_auth=True)
    m.receive_data(b"\x05\x01\x00")
    assert m.next_event() == Greeting((0,))
    assert m.send(MethodSelection(Method.NO_ACCEPTABLE)) == b"\x05\xff"
    assert m.state is State.CLOSED


@pytest.mark.parametrize(
    ("wire", "words"),
    [(b"\x04\x01\x00", "version 5"), (b"\x05\x00", "NMETHODS is 0"), (b"GET / HTTP/1.1", "0x47")],
)
def test_bad_greetings_get_no_acceptable_methods(wire: bytes, words: str) -> None:
    m = Socks5Server()
    m.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=words) as info:
        m.next_event()
    assert m.send_error(info.value) == b"\x05\xff"


def test_sending_a_method_the_client_did_not_offer_is_our_bug() -> None:
    m = Socks5Server()
    m.receive_data(b"\x05\x01\x00")
    m.next_event()
    with pytest.raises(LocalProtocolError):
        m.send(MethodSelection(Method.USERNAME_PASSWORD))
    with pytest.raises(LocalProtocolError):
        m.send(Reply(SocksReply.SUCCEEDED))
    with pytest.raises(LocalProtocolError):
        m.next_event()


# --- RFC 1929 username/password ---------------------------------------------------------


def auth_machine() -> Socks5Server:
    m = Socks5Server(require_auth=True)
    m.receive_data(b"\x05\x02\x00\x02")
    assert m.next_event() == Greeting((0, 2))
    assert m.send(MethodSelection(Method.USERNAME_PASSWORD)) == b"\x05\x02"
    return m


def test_rfc1929_2_success_playbook() -> None:
    m = auth_machine()
    m.receive_data(b"\x01\x05alice\x06s3cret" + CONNECT_NAME + b"early")
    auth = m.next_event()
    assert auth == AuthRequest("alice", "s3cret")
    assert "s3cret" not in repr(auth)
    assert credentials_match({"alice": "s3cret"}, auth)
    assert m.send(AuthReply(True)) == b"\x01\x00"
    assert m.next_event() == Request(Command.CONNECT, Destination("example.com", 443))
    reply = m.send(Reply(SocksReply.SUCCEEDED, (IPv6Address("2001:db8::5"), 4321)))
    assert reply == b"\x05\x00\x00\x04" + IPv6Address("2001:db8::5").packed + b"\x10\xe1"
    assert m.state is State.ESTABLISHED
    assert m.trailing_data() == b"early"
    assert m.trailing_data() == b""


def test_rfc1929_2_failure_closes() -> None:
    m = auth_machine()
    m.receive_data(b"\x01\x05alice\x05wrong")
    auth = m.next_event()
    assert isinstance(auth, AuthRequest)
    assert not credentials_match({"alice": "s3cret"}, auth)
    assert not credentials_match({"bob": "wrong"}, auth)
    assert credentials_match(None, auth)
    assert m.send(AuthReply(False)) == b"\x01\x01"
    assert m.state is State.CLOSED


def test_rfc1929_2_bad_version_gets_failure_status() -> None:
    m = auth_machine()
    m.receive_data(b"\x05\x05alice")
    with pytest.raises(RemoteProtocolError, match="RFC 1929") as info:
        m.next_event()
    assert m.send_error(info.value) == b"\x01\x01"


def test_rfc1929_empty_fields_and_non_utf8() -> None:
    m = auth_machine()
    m.receive_data(b"\x01\x00\x02\xff\xfe")
    auth = m.next_event()
    assert isinstance(auth, AuthRequest)
    assert auth.username == ""
    assert not credentials_match({"": "x"}, auth)


# --- Replies: scripted event -> expected bytes (RFC 1928 §6) ----------------------------

REPLIES = [
    (
        Reply(SocksReply.SUCCEEDED, (IPv4Address("10.0.0.1"), 1080)),
        b"\x05\x00\x00\x01\x0a\x00\x00\x01\x04\x38",
    ),
    (Reply(SocksReply.GENERAL_FAILURE), b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"),
    (Reply(SocksReply.NOT_ALLOWED), b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"),
    (Reply(SocksReply.NETWORK_UNREACHABLE), b"\x05\x03\x00\x01" + bytes(6)),
    (Reply(SocksReply.HOST_UNREACHABLE), b"\x05\x04\x00\x01" + bytes(6)),
    (Reply(SocksReply.CONNECTION_REFUSED), b"\x05\x05\x00\x01" + bytes(6)),
    (Reply(SocksReply.TTL_EXPIRED), b"\x05\x06\x00\x01" + bytes(6)),
    (Reply(SocksReply.COMMAND_NOT_SUPPORTED), b"\x05\x07\x00\x01" + bytes(6)),
    (Reply(SocksReply.ADDRESS_TYPE_NOT_SUPPORTED), b"\x05\x08\x00\x01" + bytes(6)),
]


@pytest.mark.parametrize(("reply", "wire"), REPLIES)
def test_rfc1928_6_reply_bytes(reply: Reply, wire: bytes) -> None:
    m, _ = established(CONNECT_V4)
    assert m.send(reply) == wire
    assert m.state is (State.ESTABLISHED if reply.code == 0 else State.CLOSED)


# --- EOF ------------------------------------------------------------------------------


def test_eof_at_message_boundary_is_a_clean_close() -> None:
    m = Socks5Server()
    m.receive_data(b"")
    assert m.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        m.receive_data(b"x")


def test_eof_mid_request_is_a_protocol_error() -> None:
    m = Socks5Server()
    m.receive_data(GREETING_NOAUTH)
    m.next_event()
    m.send(MethodSelection(Method.NO_AUTH))
    m.receive_data(CONNECT_NAME[:7])
    assert m.next_event() is NEED_DATA
    m.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of its SOCKS5 request"):
        m.next_event()


# --- Trickle: every message one byte at a time ------------------------------------------


def feed_trickle(m: Socks5Server, wire: bytes) -> object:
    for i, byte in enumerate(wire):
        m.receive_data(bytes([byte]))
        event = m.next_event()
        if i < len(wire) - 1:
            assert event is NEED_DATA, f"event after byte {i} of {len(wire)}"
    return event


@pytest.mark.parametrize("request_wire", [r[0] for r in REQUESTS])
def test_trickle_greeting_auth_request(request_wire: bytes) -> None:
    m = Socks5Server(require_auth=True)
    assert feed_trickle(m, b"\x05\x02\x00\x02") == Greeting((0, 2))
    m.send(MethodSelection(Method.USERNAME_PASSWORD))
    assert feed_trickle(m, b"\x01\x01u\x02pw") == AuthRequest("u", "pw")
    m.send(AuthReply(True))
    event = feed_trickle(m, request_wire)
    assert isinstance(event, Request)


# --- Fuzz: only RemoteProtocolError (or NEED_DATA) ---------------------------------------


def drive(m: Socks5Server, chunks: list[bytes]) -> None:
    """Play the server's side with whatever arrives, as the net handler does."""
    for chunk in chunks:
        m.receive_data(chunk)
        while m.state in (State.GREETING, State.AUTH, State.REQUEST):
            event = m.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, Greeting):
                m.send(MethodSelection(select_method(event.methods, require_auth=m.require_auth)))
            elif isinstance(event, AuthRequest):
                m.send(AuthReply(credentials_match({"u": "p"}, event)))
            elif isinstance(event, Request):
                assert isinstance(event.destination, Destination)
                m.send(Reply(SocksReply.SUCCEEDED))
                m.trailing_data()
        if m.state is State.CLOSED:
            return


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=6), require_auth=st.booleans())
def test_fuzz_only_remote_protocol_error(chunks: list[bytes], require_auth: bool) -> None:
    m = Socks5Server(require_auth=require_auth)
    try:
        drive(m, chunks)
    except RemoteProtocolError as error:
        assert isinstance(m.send_error(error), bytes)


@settings(max_examples=300, deadline=None)
@given(tail=st.binary(max_size=300), prefix_len=st.integers(0, 4))
def test_fuzz_structured_requests(tail: bytes, prefix_len: int) -> None:
    """Valid greeting, then a request starting with a plausible head and random bytes."""
    m = Socks5Server()
    with contextlib.suppress(RemoteProtocolError):
        drive(m, [GREETING_NOAUTH, b"\x05\x01\x00\x03"[:prefix_len] + tail])


def test_describe_methods_for_log_lines() -> None:
    assert describe_methods((0, 1, 2, 0x80)) == "no-auth, GSSAPI, username/password, 0x80"
