"""Known answers: packets written by scapy into tests/data/packets/ (see make_packets.py)
parse to fixed field values, checksums included."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest

from proxy64.errors import PacketError
from proxy64.packet import (
    Icmpv4Message,
    Icmpv6Message,
    Ipv4Flags,
    IPv4Packet,
    IPv6Packet,
    Reason,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
    parse_ip,
    parse_quoted,
    parse_transport,
)

DATA = Path(__file__).parent.parent / "data" / "packets"


def load(name: str) -> bytes:
    return bytes.fromhex((DATA / f"{name}.hex").read_text())


def test_rfc791_rfc9293_ipv4_tcp_syn() -> None:
    p = parse_ip(load("ipv4_tcp_syn"))
    assert isinstance(p, IPv4Packet)
    assert (p.src, p.dst) == (ip_address("192.0.2.10"), ip_address("198.51.100.20"))
    assert (p.ihl, p.tos, p.dscp, p.ecn, p.total_length) == (5, 0x10, 4, 0, 60)
    assert (p.identification, p.flags, p.fragment_offset, p.ttl) == (0x1C46, Ipv4Flags.DF, 0, 64)
    assert (p.protocol, p.checksum) == (6, 0x3214)
    t = parse_transport(p)
    assert isinstance(t, TcpSegment)
    assert (t.src_port, t.dst_port, t.seq, t.ack) == (51000, 443, 0x01020304, 0)
    assert (t.data_offset, t.flags, t.window, t.checksum, t.urgent) == (
        10,
        TcpFlags.SYN,
        64240,
        0xB181,
        0,
    )
    assert t.options == TcpOptions(
        mss=1460, window_scale=7, sack_permitted=True, timestamps=(123456, 0)
    )
    assert t.sequence_length == 1 and not t.payload


def test_rfc8200_ipv6_tcp_data() -> None:
    p = parse_ip(load("ipv6_tcp_data"))
    assert isinstance(p, IPv6Packet)
    assert (p.src, p.dst) == (ip_address("2001:db8::10"), ip_address("64:ff9b::c633:6414"))
    assert (p.traffic_class, p.dscp, p.flow_label, p.hop_limit) == (0x28, 10, 0x12345, 57)
    assert (p.payload_length, p.next_header, p.protocol, p.header_length) == (51, 6, 6, 40)
    t = parse_transport(p)
    assert isinstance(t, TcpSegment)
    assert (t.src_port, t.dst_port, t.seq, t.ack) == (443, 51000, 3000000000, 0x01020305)
    assert (t.flags, t.window, t.checksum) == (TcpFlags.PSH | TcpFlags.ACK, 501, 0x9259)
    assert t.options.timestamps == (99, 123456)
    assert bytes(t.payload) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert t.sequence_length == 19


def test_rfc768_ipv4_udp_dns_query() -> None:
    p = parse_ip(load("ipv4_udp_dns"))
    assert isinstance(p, IPv4Packet)
    assert (p.identification, p.ttl, p.checksum, p.total_length) == (4242, 63, 0x56EC, 57)
    u = parse_transport(p)
    assert isinstance(u, UdpDatagram)
    assert (u.src_port, u.dst_port, u.length, u.checksum) == (33333, 53, 37, 0xBFA5)
    assert bytes(u.payload[:2]) == b"\xbe\xef"


def test_rfc8200_4_extension_headers_walk() -> None:
    p = parse_ip(load("ipv6_udp_extensions"))
    assert isinstance(p, IPv6Packet)
    assert [(e.kind, e.offset, e.length) for e in p.extension_headers] == [(0, 40, 8), (60, 48, 8)]
    assert (p.next_header, p.protocol, p.upper_offset, p.hop_limit) == (0, 17, 56, 1)
    u = parse_transport(p)
    assert isinstance(u, UdpDatagram)
    assert (u.src_port, u.dst_port, u.length, u.checksum) == (5000, 6000, 11, 0x0777)
    assert bytes(u.payload) == b"odd"


def test_rfc8200_8_1_routing_header_final_destination() -> None:
    p = parse_ip(load("ipv6_udp_routing"))
    assert isinstance(p, IPv6Packet)
    assert p.dst == ip_address("2001:db8::a")
    assert p.final_destination == ip_address("2001:db8::c")
    u = parse_transport(p)  # the checksum verifies only with the final destination
    assert isinstance(u, UdpDatagram) and u.checksum == 0x4554


def test_rfc792_ipv4_echo_request() -> None:
    p = parse_ip(load("ipv4_icmp_echo"))
    m = parse_transport(p)
    assert isinstance(m, Icmpv4Message)
    assert (m.type, m.code, m.checksum, m.identifier, m.sequence) == (8, 0, 0x022C, 0x4D2, 1)
    assert bytes(m.data) == bytes(range(32))


def test_rfc4443_echo_request_and_packet_too_big() -> None:
    m = parse_transport(parse_ip(load("ipv6_icmpv6_echo")))
    assert isinstance(m, Icmpv6Message)
    assert (m.type, m.checksum, m.identifier, m.sequence, bytes(m.data)) == (
        128,
        0x8DD6,
        0x4D2,
        2,
        b"abcdefgh",
    )
    ptb = parse_transport(parse_ip(load("ipv6_icmpv6_too_big")))
    assert isinstance(ptb, Icmpv6Message)
    assert (ptb.type, ptb.code, ptb.checksum, ptb.mtu, ptb.is_error) == (2, 0, 0xD3FB, 1280, True)
    quoted = ptb.quoted
    assert (
        len(quoted) == 80
        and quoted[0] >> 4 == 6
        and bytes(quoted[24:40]) == bytes(ip_address("2001:db8::99").packed)
    )
    q = parse_quoted(ptb)
    assert (q.version, q.protocol, q.src, q.dst, q.src_port, q.dst_port) == (
        6,
        6,
        ip_address("2001:db8::1"),
        ip_address("2001:db8::99"),
        0,
        0,
    )


def test_fragments_are_reported_as_fragments() -> None:
    first = parse_ip(load("ipv4_fragment_first"))
    assert isinstance(first, IPv4Packet)
    assert (first.is_fragment, first.more_fragments, first.fragment_offset) == (True, True, 0)
    assert first.identification == 77 and first.checksum == 0xD640
    later = parse_ip(load("ipv6_fragment_later"))
    assert isinstance(later, IPv6Packet)
    assert (later.is_fragment, later.more_fragments, later.fragment_offset) == (True, True, 185)
    assert (later.fragment_identification, later.protocol) == (0xCAFE, 17)
    for packet in (first, later):
        with pytest.raises(PacketError) as info:
            parse_transport(packet)
        assert info.value.reason is Reason.FRAGMENT


def test_rfc791_options_router_alert() -> None:
    p = parse_ip(load("ipv4_options_router_alert"))
    assert isinstance(p, IPv4Packet)
    assert (p.ihl, p.header_length, bytes(p.options)) == (6, 24, b"\x94\x04\x00\x00")
    assert (p.protocol, p.ttl, p.checksum) == (2, 1, 0x82B3)
    assert p.dst.is_multicast
    with pytest.raises(PacketError) as info:
        parse_transport(p)
    assert info.value.reason is Reason.UNSUPPORTED_PROTOCOL


def test_rfc4302_2_2_authentication_header_length_in_4_octet_units() -> None:
    p = parse_ip(load("ipv6_ah_udp"))
    assert isinstance(p, IPv6Packet)
    assert [(e.kind, e.offset, e.length) for e in p.extension_headers] == [(51, 40, 24)]
    assert (p.next_header, p.protocol, p.upper_offset) == (51, 17, 64)
    u = parse_transport(p)
    assert isinstance(u, UdpDatagram)
    assert (u.src_port, u.dst_port, u.length, u.checksum) == (500, 4500, 13, 0x5101)
    assert bytes(u.payload) == b"ipsec"
