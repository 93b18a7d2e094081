"""SOCKS4 and SOCKS4a machine: tables, replies, trickle and fuzz."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply
from proxy64.proto.socks4 import Socks4Reply, Socks4Request, Socks4Server, State
from proxy64.proto.socks5 import NEED_DATA, ConnectionClosed

REJECT = b"\x00\x5b\x00\x00\x00\x00\x00\x00"

REQUESTS = [
    (
        b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
        Socks4Request(Destination(IPv4Address("127.0.0.1"), 80), b"", False),
    ),
    (
        b"\x04\x01\x01\xbb\xc0\x00\x02\x01alice\x00",
        Socks4Request(Destination(IPv4Address("192.0.2.1"), 443), b"alice", False),
    ),
    (
        b"\x04\x01\x00\x50\x00\x00\x00\x01\x00Example.COM\x00",
        Socks4Request(Destination("example.com", 80), b"", True),
    ),
    (
        b"\x04\x01\x00\x50\x00\x00\x00\xffbob\x00::1\x00",
        Socks4Request(Destination(IPv6Address("::1"), 80), b"bob", True),
    ),
    (
        b"\x04\x01\x00\x50\x00\x00\x00\x07\x00127.0.0.1\x00",
        Socks4Request(Destination(IPv4Address("127.0.0.1"), 80), b"", True),
    ),
]


@pytest.mark.parametrize(("wire", "expected"), REQUESTS)
def test_socks4_and_4a_requests(wire: bytes, expected: Socks4Request) -> None:
    m = Socks4Server()
    m.receive_data(wire + b"first bytes")
    assert m.next_event() == expected
    assert m.send(Socks4Reply(True, (IPv4Address("10.1.2.3"), 4660))) == (
        b"\x00\x5a\x12\x34\x0a\x01\x02\x03"
    )
    assert m.state is State.ESTABLISHED
    assert m.trailing_data() == b"first bytes"


BAD = [
    (b"\x05\x01\x00\x50\x7f\x00\x00\x01\x00", "version 4"),
    (b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", "BIND"),
    (b"\x04\x03", "unknown SOCKS4 command 0x03"),
    (b"\x04\x01\x00\x50\x00\x00\x00\x00\x00", "0.0.0.0"),
    (b"\x04\x01\x00\x00\x7f\x00\x00\x01\x00", "port 0"),
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 256, "user id has no NUL within 255"),
    (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 256, "host name has no NUL within 255"),
    (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", "empty domain name"),
    (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00a..b\x00", "empty label"),
]


@pytest.mark.parametrize(("wire", "words"), BAD)
def test_socks4_bad_requests_are_rejected_with_5b(wire: bytes, words: str) -> None:
    m = Socks4Server()
    m.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=words) as info:
        m.next_event()
    assert m.send_error(info.value) == REJECT
    assert m.state is State.CLOSED


def test_socks4_refused_when_credentials_are_configured() -> None:
    m = Socks4Server(require_auth=True)
    m.receive_data(REQUESTS[1][0])
    with pytest.raises(RemoteProtocolError, match=r"no password.*use SOCKS5") as info:
        m.next_event()
    assert info.value.socks_reply == SocksReply.NOT_ALLOWED
    assert m.send_error(info.value) == REJECT


def test_socks4_reply_rejected_and_ipv6_bind() -> None:
    m = Socks4Server()
    m.receive_data(REQUESTS[0][0])
    m.next_event()
    with pytest.raises(LocalProtocolError):
        m.next_event()
    assert m.send(Socks4Reply(False)) == REJECT
    m = Socks4Server()
    m.receive_data(REQUESTS[0][0])
    m.next_event()
    assert m.send(Socks4Reply(True, (IPv6Address("::1"), 80))) == b"\x00\x5a\x00\x50" + bytes(4)


def test_socks4_eof() -> None:
    m = Socks4Server()
    m.receive_data(b"")
    assert m.next_event() == ConnectionClosed()
    m = Socks4Server()
    m.receive_data(b"\x04\x01\x00")
    assert m.next_event() is NEED_DATA
    m.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of its SOCKS4 request"):
        m.next_event()


@pytest.mark.parametrize(("wire", "expected"), REQUESTS)
def test_socks4_trickle(wire: bytes, expected: Socks4Request) -> None:
    m = Socks4Server()
    for i, byte in enumerate(wire):
        m.receive_data(bytes([byte]))
        event = m.next_event()
        if i < len(wire) - 1:
            assert event is NEED_DATA
    assert event == expected


@settings(max_examples=400, deadline=None)
@given(
    head=st.sampled_from([b"", b"\x04", b"\x04\x01", b"\x04\x01\x00\x50\x00\x00\x00\x01"]),
    chunks=st.lists(st.binary(max_size=80), max_size=5),
    eof=st.booleans(),
    require_auth=st.booleans(),
)
def test_socks4_fuzz_only_remote_protocol_error(
    head: bytes, chunks: list[bytes], eof: bool, require_auth: bool
) -> None:
    m = Socks4Server(require_auth=require_auth)
    try:
        for chunk in [head, *chunks, *([b""] if eof else [])]:
            m.receive_data(chunk)
            event = m.next_event()
            if isinstance(event, Socks4Request):
                assert isinstance(event.destination, Destination)
                m.send(Socks4Reply(True))
                m.trailing_data()
                return
            if isinstance(event, ConnectionClosed):
                return
    except RemoteProtocolError as error:
        assert m.send_error(error) == REJECT
