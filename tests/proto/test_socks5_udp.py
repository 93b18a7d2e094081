"""RFC 1928 §7 UDP request header: parse/build, fragments dropped, fuzz."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import RemoteProtocolError, SocksReply
from proxy64.proto.socks5_udp import (
    UdpDatagram,
    UdpDropped,
    build_udp_datagram,
    parse_udp_datagram,
)

DATAGRAMS = [
    (
        b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35hello",
        Destination(IPv4Address("127.0.0.1"), 53),
        b"hello",
    ),
    (
        b"\x00\x00\x00\x04" + IPv6Address("::1").packed + b"\x1f\x90",
        Destination(IPv6Address("::1"), 8080),
        b"",
    ),
    (b"\x00\x00\x00\x03\x07Dns.Com\x00\x35q", Destination("dns.com", 53), b"q"),
]


@pytest.mark.parametrize(("wire", "destination", "payload"), DATAGRAMS)
def test_rfc1928_7_parse(wire: bytes, destination: Destination, payload: bytes) -> None:
    assert parse_udp_datagram(wire) == UdpDatagram(destination, payload)


@pytest.mark.parametrize(("wire", "destination", "payload"), DATAGRAMS)
def test_rfc1928_7_build_round_trip(wire: bytes, destination: Destination, payload: bytes) -> None:
    built = build_udp_datagram(destination, payload)
    assert parse_udp_datagram(built) == UdpDatagram(destination, payload)


def test_rfc1928_7_reply_names_the_source_as_asked() -> None:
    assert (
        build_udp_datagram(Destination("dns.com", 53), b"x")
        == b"\x00\x00\x00\x03\x07dns.com\x00\x35x"
    )


def test_rfc1928_7_fragments_are_dropped() -> None:
    outcome = parse_udp_datagram(b"\x00\x00\x01\x01\x7f\x00\x00\x01\x00\x35part")
    assert isinstance(outcome, UdpDropped)
    assert "fragment" in outcome.reason
    assert isinstance(parse_udp_datagram(b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x00x"), UdpDropped)


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (b"\x00\x00\x00", "shorter than its header"),
        (b"\x00\x01\x00\x01\x7f\x00\x00\x01\x00\x35", "RSV"),
        (b"\x00\x00\x00\x01\x7f\x00", "ends inside"),
        (b"\x00\x00\x00\x03\x00\x00\x35", "empty domain"),
        (b"\x00\x00\x00\x09\x00\x00\x35", "ATYP 0x09"),
    ],
)
def test_rfc1928_7_malformed(wire: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words) as info:
        parse_udp_datagram(wire)
    if "ATYP" in words:
        assert info.value.socks_reply == SocksReply.ADDRESS_TYPE_NOT_SUPPORTED


@settings(max_examples=500, deadline=None)
@given(
    head=st.sampled_from([b"", b"\x00\x00\x00", b"\x00\x00\x00\x03", b"\x00\x00\x01\x01"]),
    tail=st.binary(max_size=300),
)
def test_udp_header_fuzz_only_remote_protocol_error(head: bytes, tail: bytes) -> None:
    try:
        outcome = parse_udp_datagram(head + tail)
    except RemoteProtocolError:
        return
    assert isinstance(outcome, UdpDatagram | UdpDropped)
