"""Random packets built by scapy parse to the values scapy put in; our parser and scapy
agree on every checksum; one flipped bit in a checksummed packet is detected."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy64.errors import PacketError
from proxy64.packet import (
    Icmpv4Message,
    Icmpv6Message,
    IPv4Packet,
    IPv6Packet,
    Reason,
    TcpSegment,
    UdpDatagram,
    parse_ip,
    parse_transport,
)
from tests.packet.scapy_oracle import (
    IP,
    Built,
    IPv6,
    ip_packets,
    ipv4_packets,
    ipv6_packets,
    parse_with_scapy,
    upper_layer,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_EXT_KIND = {"hbh": 0, "dst": 60, "rt0": 43, "rt2": 43, "srh": 43, "atomic": 44}


def _check_ip(built: Built, packet: IPv4Packet | IPv6Packet) -> None:
    fields = built.expect["ip"]
    scapy = parse_with_scapy(built.data)
    address = IPv4Address if built.family == 4 else IPv6Address
    assert packet.src == address(fields["src"])
    assert packet.dst == address(scapy.dst) == address(fields["dst"])
    assert packet.src_packed == packet.src.packed
    assert bytes(packet) == built.data
    if isinstance(packet, IPv4Packet):
        assert packet.tos == fields["tos"]
        assert packet.dscp == fields["tos"] >> 2 and packet.ecn == fields["tos"] & 3
        assert packet.identification == fields["id"]
        assert int(packet.flags) == fields["flags"]
        assert packet.dont_fragment == bool(fields["flags"] & 2)
        assert packet.ttl == packet.hop_limit == fields["ttl"]
        assert packet.ihl == scapy.ihl
        assert packet.total_length == scapy.len == len(built.data)
        assert packet.checksum == scapy.chksum
        assert packet.header_checksum_ok()
        assert packet.protocol == scapy.proto
        assert bytes(packet.options) == built.data[20 : packet.header_length]
        assert not packet.is_fragment
    else:
        assert packet.traffic_class == fields["tc"]
        assert packet.flow_label == fields["fl"]
        assert packet.hop_limit == fields["hlim"]
        assert packet.payload_length == scapy.plen == len(built.data) - 40
        assert packet.next_header == scapy.nh
        kinds = [e.kind for e in packet.extension_headers]
        assert kinds == [_EXT_KIND[k] for k in built.expect["extensions"]]
        assert not packet.is_fragment  # atomic fragments are not fragments (RFC 6946)
        if packet.extension_headers:
            last = packet.extension_headers[-1]
            assert packet.upper_offset == last.offset + last.length
            assert packet.protocol == built.data[last.offset]
        else:
            assert packet.protocol == packet.next_header


def _check_transport(built: Built, packet: IPv4Packet | IPv6Packet) -> None:
    expect = built.expect
    if "other" in expect:
        assert packet.protocol == expect["other"]
        with pytest.raises(PacketError) as info:
            parse_transport(packet)
        assert info.value.reason is Reason.UNSUPPORTED_PROTOCOL
        return
    t = parse_transport(packet)  # verifies the checksum scapy computed
    upper = upper_layer(parse_with_scapy(built.data))
    if "tcp" in expect:
        assert isinstance(t, TcpSegment)
        f = expect["tcp"]
        assert (t.src_port, t.dst_port, t.seq, t.ack) == (
            f["sport"],
            f["dport"],
            f["seq"],
            f["ack"],
        )
        assert (int(t.flags), t.window, t.urgent) == (f["flags"], f["window"], f["urgptr"])
        assert t.checksum == upper.chksum
        assert t.data_offset == upper.dataofs
        opts = t.options
        for name, value in expect["options"]:
            if name == "MSS":
                assert opts.mss == value
            elif name == "WScale":
                assert opts.window_scale == value
            elif name == "SAckOK":
                assert opts.sack_permitted
            elif name == "Timestamp":
                assert opts.timestamps == value
            elif name == "SAck":
                assert opts.sack_blocks == tuple(zip(value[::2], value[1::2], strict=True))
            elif isinstance(name, int):
                assert (name, value) in opts.unknown
        assert bytes(t.payload) == bytes(upper.payload)
    elif "udp" in expect:
        assert isinstance(t, UdpDatagram)
        assert (t.src_port, t.dst_port) == (expect["udp"]["sport"], expect["udp"]["dport"])
        assert t.length == upper.len and t.checksum == upper.chksum
    elif "echo" in expect:
        assert isinstance(t, Icmpv4Message | Icmpv6Message)
        ident, seq, reply = expect["echo"]
        assert t.is_echo and not t.is_error
        assert (t.identifier, t.sequence) == (ident, seq)
        assert t.type == ((0 if reply else 8) if built.family == 4 else (129 if reply else 128))
        assert t.checksum == upper.cksum if built.family == 6 else upper.chksum
    else:
        assert isinstance(t, Icmpv4Message | Icmpv6Message)
        which, value = expect["error"]
        assert t.is_error and not t.is_echo
        if which == "toobig":
            assert t.mtu == value
        if which == "param":
            assert t.pointer == (value & 0xFF if built.family == 4 else value)
        assert bytes(t.quoted) == bytes(t.buffer[8:])


@SETTINGS
@given(ipv4_packets())
def test_rfc791_ipv4_fields_match_scapy(built: Built) -> None:
    packet = parse_ip(built.data)
    assert isinstance(packet, IPv4Packet)
    _check_ip(built, packet)
    _check_transport(built, packet)


@SETTINGS
@given(ipv6_packets())
def test_rfc8200_ipv6_fields_and_extension_walk_match_scapy(built: Built) -> None:
    packet = parse_ip(built.data)
    assert isinstance(packet, IPv6Packet)
    _check_ip(built, packet)
    _check_transport(built, packet)


@SETTINGS
@given(ip_packets(), st.data())
def test_one_flipped_bit_is_detected(built: Built, data: st.DataObject) -> None:
    # The Internet checksum detects every single-bit error in the data it covers.
    assume("other" not in built.expect)
    packet = parse_ip(built.data)
    start = packet.upper_offset
    bit = data.draw(st.integers(0, (len(built.data) - start) * 8 - 1))
    corrupted = bytearray(built.data)
    corrupted[start + bit // 8] ^= 1 << (bit % 8)
    try:
        parse_transport(parse_ip(corrupted))
    except PacketError as exc:
        assert exc.reason in {
            Reason.BAD_CHECKSUM,
            Reason.BAD_DATA_OFFSET,
            Reason.BAD_UDP_LENGTH,
            Reason.TRUNCATED,
            Reason.ZERO_UDP_CHECKSUM_V6,
        }
    else:
        raise AssertionError(f"flipped bit {bit} of the upper layer went unnoticed")


@SETTINGS
@given(ipv4_packets(), st.data())
def test_rfc791_header_bit_flip_detected(built: Built, data: st.DataObject) -> None:
    bit = data.draw(st.integers(0, 20 * 8 - 1))
    corrupted = bytearray(built.data)
    corrupted[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PacketError):
        parse_ip(corrupted)


def test_scapy_oracle_module_builds_both_families() -> None:
    assert IP(bytes(IP(dst="192.0.2.1"))).dst == "192.0.2.1"
    assert IPv6(bytes(IPv6(src="::1", dst="::2"))).dst == "::2"
