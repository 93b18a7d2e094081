"""Fragments made by scapy's own fragmenters are recognised as such (RFC 791 §3.2,
RFC 8200 §4.5): offsets and the M flag match, and no upper-layer view is made of them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.packet import Raw

from proxy64.errors import PacketError
from proxy64.packet import IPv4Packet, IPv6Packet, Reason, parse_ip, parse_transport

# Scapy builds slowly and the payloads are large on purpose (they must need fragmenting).
SLOW_OK = [HealthCheck.too_slow, HealthCheck.large_base_example]


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(min_size=600, max_size=3000), st.sampled_from([64, 256, 512]))
def test_rfc791_ipv4_fragments(payload: bytes, size: int) -> None:
    whole = IP(src="192.0.2.1", dst="192.0.2.2", id=99) / UDP(sport=1, dport=2) / Raw(payload)
    pieces = fragment(whole, fragsize=size)
    assert len(pieces) > 1
    for piece in pieces:
        data = bytes(piece)
        packet = parse_ip(data)
        assert isinstance(packet, IPv4Packet)
        scapy = IP(data)
        assert packet.is_fragment
        assert packet.fragment_offset == scapy.frag
        assert packet.more_fragments == bool(scapy.flags.MF)
        assert packet.identification == 99
        with pytest.raises(PacketError) as info:
            parse_transport(packet)
        assert info.value.reason is Reason.FRAGMENT
    assert not parse_ip(bytes(pieces[-1])).more_fragments


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(min_size=1600, max_size=3000), st.sampled_from([1280, 1500]))
def test_rfc8200_4_5_ipv6_fragments(payload: bytes, size: int) -> None:
    whole = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrFragment(id=0xABCDEF)
        / UDP(sport=1, dport=2)
        / Raw(payload)
    )
    pieces = fragment6(whole, size)
    assert len(pieces) > 1
    for piece in pieces:
        data = bytes(piece)
        packet = parse_ip(data)
        assert isinstance(packet, IPv6Packet)
        header = IPv6(data)[IPv6ExtHdrFragment]
        assert packet.is_fragment
        assert packet.fragment_offset == header.offset
        assert packet.more_fragments == bool(header.m)
        assert packet.fragment_identification == 0xABCDEF
        assert packet.protocol == 17  # the Fragment header's Next Header
        with pytest.raises(PacketError) as info:
            parse_transport(packet)
        assert info.value.reason is Reason.FRAGMENT
