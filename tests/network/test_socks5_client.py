"""The tests' own SOCKS5 client (tests/helpers/socks5_client.py) judges proxy64's replies,
so it is checked first, without root: its RFC 1928 §7 datagrams round-trip, and proxy64's
own codec (proxy64.proto.socks5_udp) reads what it writes and writes what it reads.
"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.proto.socks5_udp import UdpDatagram, build_udp_datagram, parse_udp_datagram
from tests.helpers import socks5_client

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20)
HOSTS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
)
PORTS = st.integers(min_value=0, max_value=65535)
DESTINATION_PORTS = st.integers(min_value=1, max_value=65535)  # proxy64 drops port 0
PAYLOADS = st.binary(max_size=512)


@given(HOSTS, PORTS)
def test_address_round_trip(host: str, port: int) -> None:
    encoded = socks5_client.encode_address(host, port)
    assert socks5_client.decode_address(encoded) == (host, port, len(encoded))


@given(HOSTS, PORTS, PAYLOADS)
def test_rfc1928_7_datagram_round_trip(host: str, port: int, payload: bytes) -> None:
    datagram = socks5_client.udp_datagram(host, port, payload)
    assert socks5_client.parse_udp_datagram(datagram) == (host, port, payload)


@given(HOSTS, DESTINATION_PORTS, PAYLOADS)
def test_proxy64_reads_what_the_test_client_writes(host: str, port: int, payload: bytes) -> None:
    parsed = parse_udp_datagram(socks5_client.udp_datagram(host, port, payload))
    assert isinstance(parsed, UdpDatagram)
    expected = Destination.from_text(host, port)
    if isinstance(expected.host, IPv6Address) and expected.host.ipv4_mapped is not None:
        expected = Destination(expected.host.ipv4_mapped, port)  # proxy64 unwraps ::ffff:a.b.c.d
    assert parsed.destination == expected
    assert parsed.payload == payload


@given(HOSTS, PORTS, PAYLOADS)
def test_test_client_reads_what_proxy64_writes(host: str, port: int, payload: bytes) -> None:
    source = Destination.from_text(host, port)
    got_host, got_port, got_payload = socks5_client.parse_udp_datagram(
        build_udp_datagram(source, payload)
    )
    assert Destination.from_text(got_host, got_port) == source
    assert got_payload == payload


@pytest.mark.parametrize(
    ("host", "encoded"),
    [
        ("100.200.0.10", b"\x01\x64\xc8\x00\x0a\x00\x50"),
        ("fd64:c::80", b"\x04" + IPv6Address("fd64:c::80").packed + b"\x00\x50"),
        ("v4only.nat64.test", b"\x03\x11v4only.nat64.test\x00\x50"),
    ],
)
def test_rfc1928_5_address_forms(host: str, encoded: bytes) -> None:
    assert socks5_client.encode_address(host, 80) == encoded
