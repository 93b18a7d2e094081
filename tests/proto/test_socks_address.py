"""RFC 1928 §5 address codec: every ATYP, literals in names, name rules, round trip, fuzz."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply
from proxy64.proto.socks_address import decode_host, encode_address, parse_address


def test_encode_address_each_type() -> None:
    assert encode_address("example.com", 443) == b"\x03\x0bexample.com\x01\xbb"
    assert encode_address(IPv4Address("192.0.2.1"), 80) == b"\x01\xc0\x00\x02\x01\x00\x50"
    assert encode_address(IPv6Address("::1"), 1) == b"\x04" + bytes(15) + b"\x01\x00\x01"
    with pytest.raises(LocalProtocolError):
        encode_address("a" * 256, 1)


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        (b"Example.COM.", "example.com"),
        (b"10.0.0.1", IPv4Address("10.0.0.1")),
        (b"[2001:db8::1]", IPv6Address("2001:db8::1")),
        (b"::ffff:192.0.2.1", IPv4Address("192.0.2.1")),
        (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
        (b"127.1", "127.1"),  # not a literal for ipaddress: a name, resolved as one
    ],
)
def test_rfc1928_5_domainname_text(raw: bytes, host: object) -> None:
    assert decode_host(raw, where="request") == host


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b".", "1 to 253"),
        (b"fe80::1%eth0", "0x3a"),  # a scoped literal is neither an address nor a name
        (b"a\x00b", "0x00"),
        (b"b\xc3\xbccher.example", "IDNA"),
        (b"a" * 64 + b".example", "63"),
    ],
)
def test_rfc1035_2_3_4_bad_names(raw: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        decode_host(raw, where="request")


@pytest.mark.parametrize(
    "destination",
    [
        Destination(IPv4Address("192.0.2.1"), 1),
        Destination(IPv6Address("2001:db8::5"), 65535),
        Destination("a.b.example", 53),
    ],
)
def test_round_trip_and_incomplete(destination: Destination) -> None:
    wire = encode_address(destination.host, destination.port)
    assert parse_address(b"xx" + wire + b"tail", 2, where="t") == (destination, 2 + len(wire))
    for cut in range(len(wire)):
        assert parse_address(wire[:cut], 0, where="t") is None


def test_unknown_atyp_is_reply_8() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_address(b"\x02\x00", 0, where="request")
    assert info.value.socks_reply == SocksReply.ADDRESS_TYPE_NOT_SUPPORTED


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_address_only_remote_protocol_error(data: bytes) -> None:
    try:
        parsed = parse_address(data, 0, where="fuzz")
    except RemoteProtocolError:
        return
    if parsed is not None:
        destination, end = parsed
        assert end <= len(data)
        assert encode_address(destination.host, destination.port) == data[:end] or (
            data[0] != 1  # names and IPv6 are normalised (case, final dot, mapped IPv4)
        )
