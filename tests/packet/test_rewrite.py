"""In-place rewriting: setters change the bytes scapy sees and keep every checksum valid
(RFC 1624 incremental update); absent fields and read-only buffers raise clearly."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy64.errors import PacketFieldError, PacketValueError
from proxy64.packet import (
    Icmpv4Message,
    Icmpv6Message,
    IPv4Packet,
    IPv6Packet,
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    build_echo,
    build_tcp,
    build_udp,
    parse_ip,
    parse_transport,
)
from proxy64.packet.checksum import internet_checksum
from tests.packet.scapy_oracle import Built, ip_packets, parse_with_scapy, scapy_recomputed

# typed by construction, whatever hypothesis version declares for ip_addresses(v=...)
IPV4_ADDRESSES = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
IPV6_ADDRESSES = st.builds(IPv6Address, st.integers(0, 2**128 - 1))

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_ones_complement(recomputed: int, updated: int) -> bool:
    """RFC 1624 §3: an incremental update can give 0xFFFF where a recomputation gives
    0x0000; both are zero in one's complement and a receiver accepts either (UDP sends
    0xFFFF, since 0 there means no checksum, RFC 768)."""
    return recomputed == updated or {recomputed, updated} == {0x0000, 0xFFFF}


@SETTINGS
@given(ip_packets(), st.data())
def test_rfc1624_setters_keep_checksums_valid(built: Built, draw: st.DataObject) -> None:
    data = bytearray(built.data)
    # scapy re-dissects an ICMPv6 error's quoted bytes as a packet and, for garbage quotes
    # (an all-zero "IPv6" header read as hop-by-hop padding), recomputes a checksum that
    # disagrees with the one it built itself: the oracle only judges what it round-trips.
    oracle_consistent = scapy_recomputed(bytes(data)) == bytes(data)
    packet = parse_ip(data)
    if packet.version == 4:
        assert isinstance(packet, IPv4Packet)
        packet.src = draw.draw(IPV4_ADDRESSES)
        packet.dst = draw.draw(IPV4_ADDRESSES)
        packet.ttl = draw.draw(st.integers(0, 255))
        packet.dscp = draw.draw(st.integers(0, 63))
        packet.ecn = draw.draw(st.integers(0, 3))
        packet.identification = draw.draw(st.integers(0, 0xFFFF))
        assert packet.header_checksum_ok()
    else:
        assert isinstance(packet, IPv6Packet)
        packet.src = draw.draw(IPV6_ADDRESSES)
        if packet.final_destination == packet.dst:
            packet.dst = draw.draw(IPV6_ADDRESSES)
        packet.hop_limit = draw.draw(st.integers(0, 255))
        packet.traffic_class = draw.draw(st.integers(0, 255))
        packet.flow_label = draw.draw(st.integers(0, (1 << 20) - 1))
    if "other" not in built.expect:
        upper = parse_transport(packet)  # verifies the checksum after address changes
        if isinstance(upper, TcpSegment):
            upper.src_port = draw.draw(st.integers(0, 0xFFFF))
            upper.dst_port = draw.draw(st.integers(0, 0xFFFF))
            upper.seq = draw.draw(st.integers(0, 0xFFFFFFFF))
            upper.ack = draw.draw(st.integers(0, 0xFFFFFFFF))
            upper.flags = draw.draw(st.integers(0, 255))
            upper.window = draw.draw(st.integers(0, 0xFFFF))
            upper.urgent = draw.draw(st.integers(0, 0xFFFF))
        elif isinstance(upper, UdpDatagram):
            upper.src_port = draw.draw(st.integers(0, 0xFFFF))
            upper.dst_port = draw.draw(st.integers(0, 0xFFFF))
        elif upper.is_echo:
            upper.identifier = draw.draw(st.integers(0, 0xFFFF))
            upper.sequence = draw.draw(st.integers(0, 0xFFFF))
        assert upper.checksum_ok()
        assert same_ones_complement(upper.compute_checksum(), upper.checksum)
    # The independent oracle: scapy recomputing every checksum changes nothing.
    if oracle_consistent:
        assert scapy_recomputed(bytes(data)) == bytes(data)
    s = parse_with_scapy(bytes(data))
    assert ip_address(s.src) == packet.src and ip_address(s.dst) == packet.dst


def test_setters_write_the_wire_fields() -> None:
    data = bytearray(
        build_tcp(
            ip_address("192.0.2.1"),
            ip_address("192.0.2.2"),
            1,
            2,
            3,
            4,
            TcpFlags.SYN,
            5,
        )
    )
    packet = parse_ip(data)
    assert isinstance(packet, IPv4Packet)
    packet.dst = IPv4Address("198.51.100.9")
    packet.ttl = 9
    seg = parse_transport(packet)
    assert isinstance(seg, TcpSegment)
    seg.dst_port = 8443
    seg.flags = TcpFlags.SYN | TcpFlags.ACK
    s = parse_with_scapy(bytes(data))
    assert (s.dst, s.ttl, s.payload.dport, str(s.payload.flags)) == ("198.51.100.9", 9, 8443, "SA")


def test_recompute_after_raw_writes() -> None:
    data = bytearray(build_udp(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 1, 2, b"ab"))
    udp = parse_transport(parse_ip(data))
    assert isinstance(udp, UdpDatagram)
    good = udp.checksum
    udp.checksum = 0x1234  # raw write: no recomputation
    assert not udp.checksum_ok()
    udp.payload[0] = ord("z")  # payload written through the view
    udp.update_checksum()
    assert udp.checksum_ok() and udp.checksum != good
    assert scapy_recomputed(bytes(data)) == bytes(data)
    ip4 = bytearray(build_echo(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 1))
    packet = parse_ip(ip4)
    assert isinstance(packet, IPv4Packet)
    packet.checksum = 0
    assert not packet.header_checksum_ok()
    packet.update_header_checksum()
    assert packet.header_checksum_ok()


def test_udp_over_ipv4_absent_checksum_stays_absent() -> None:
    data = bytearray(build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b"ab"))
    data[26:28] = b"\0\0"  # RFC 768: zero means no checksum over IPv4
    packet = parse_ip(data)
    assert isinstance(packet, IPv4Packet)
    packet.src = IPv4Address("10.9.8.7")
    udp = parse_transport(packet)
    assert isinstance(udp, UdpDatagram)
    udp.dst_port = 99
    assert udp.checksum == 0 and udp.checksum_ok()


def test_absent_fields_name_the_right_one() -> None:
    v4 = parse_ip(build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b""))
    v6 = parse_ip(build_udp(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 1, 2, b""))
    for packet, name, hint in (
        (v4, "flow_label", "IPv6 field"),
        (v4, "traffic_class", "tos"),
        (v4, "next_header", "protocol"),
        (v6, "ihl", "header_length"),
        (v6, "ttl", "hop_limit"),
        (v6, "checksum", "no header checksum"),
        (v6, "tos", "traffic_class"),
    ):
        with pytest.raises(PacketFieldError, match=hint):
            getattr(packet, name)
        with pytest.raises(AttributeError):
            setattr(packet, name, 1)
        assert getattr(packet, name, None) is None  # an AttributeError: getattr default works


def test_icmp_type_specific_fields() -> None:
    echo = parse_transport(parse_ip(build_echo(ip_address("::1"), ip_address("::2"), 7, 8)))
    assert isinstance(echo, Icmpv6Message)
    with pytest.raises(PacketFieldError):
        _ = echo.mtu
    with pytest.raises(PacketFieldError):
        _ = echo.quoted
    echo4 = parse_transport(
        parse_ip(build_echo(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 7, 8))
    )
    assert isinstance(echo4, Icmpv4Message)
    with pytest.raises(PacketFieldError):
        _ = echo4.pointer


def test_read_only_buffers_refuse_writes() -> None:
    data = build_tcp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, 3, 4, 0, 5)
    packet = parse_ip(data)
    assert isinstance(packet, IPv4Packet)
    with pytest.raises(PacketFieldError, match="bytearray"):
        packet.ttl = 1
    seg = parse_transport(packet)
    assert isinstance(seg, TcpSegment)
    with pytest.raises(PacketFieldError):
        seg.seq = 1
    assert bytes(packet) == data


def test_out_of_range_values_are_refused() -> None:
    data = bytearray(build_tcp(ip_address("::1"), ip_address("::2"), 1, 2, 3, 4, 0, 5))
    packet = parse_ip(data)
    assert isinstance(packet, IPv6Packet)
    seg = parse_transport(packet)
    assert isinstance(seg, TcpSegment)
    actions: list[Callable[[], None]] = [
        lambda: setattr(packet, "hop_limit", 256),
        lambda: setattr(packet, "flow_label", 1 << 20),
        lambda: setattr(packet, "dscp", 64),
        lambda: setattr(packet, "src", IPv4Address("192.0.2.1")),
        lambda: setattr(seg, "seq", -1),
        lambda: setattr(seg, "src_port", 65536),
        lambda: setattr(seg, "flags", 256),
    ]
    for action in actions:
        with pytest.raises(PacketValueError):
            action()
    assert bytes(packet) == bytes(data)
    assert packet.src == IPv6Address("::1")


def test_rfc1624_all_zero_icmpv4_echo_reply_keeps_checksum_ffff() -> None:
    """RFC 1624 §3: eqn. 3 gives -0 (0x0000) for all-zero data, whose checksum is 0xFFFF.
    An ICMPv4 echo reply (type 0) with id, sequence and data all zero is such data (no
    pseudo-header); found by hypothesis."""
    data = bytearray(build_echo(ip_address("0.0.0.0"), ip_address("0.0.0.0"), 1, 0, reply=True))
    echo = parse_transport(parse_ip(data))
    assert isinstance(echo, Icmpv4Message)
    echo.identifier = 0
    assert echo.checksum == 0xFFFF
    assert echo.checksum_ok()
    assert scapy_recomputed(bytes(data)) == bytes(data)


def test_rfc1624_3_an_all_zero_echo_reply_keeps_a_valid_zero_checksum() -> None:
    # The ±0 case hypothesis found: every word of the ICMP message is zero, so its
    # checksum is a one's-complement zero, which an update and a recomputation may write
    # as 0xFFFF and 0x0000.
    icmp = bytes.fromhex("0000ffff00000000")  # echo reply, checksum 0xFFFF, id 0, seq 0
    header = bytearray(bytes.fromhex("4500001c000000000001") + bytes(2) + bytes(8))
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    packet = parse_ip(bytearray(header + icmp))
    assert isinstance(packet, IPv4Packet)
    packet.src = IPv4Address("0.0.0.0")
    packet.ttl = 0
    upper = parse_transport(packet)
    assert not isinstance(upper, (TcpSegment, UdpDatagram))
    upper.identifier = 0
    upper.sequence = 0
    assert upper.checksum_ok()
    assert same_ones_complement(upper.compute_checksum(), upper.checksum)
