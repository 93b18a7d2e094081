"""Builders: scapy accepts what we build, with the checksums scapy computes itself."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet import (
    IcmpErrorKind,
    Icmpv4Message,
    Icmpv6Message,
    IPv6Packet,
    Reason,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
    Unreachable,
    build_echo,
    build_echo_reply,
    build_icmp_error,
    build_tcp,
    build_udp,
    error_allowed,
    internet_checksum,
    parse_ip,
    parse_quoted,
    parse_transport,
    response_to,
)
from tests.packet.scapy_oracle import (
    TCP,
    UDP,
    Built,
    ip_packets,
    parse_with_scapy,
    scapy_recomputed,
    upper_layer,
)

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
V4 = st.ip_addresses(v=4)
V6 = st.ip_addresses(v=6)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
pairs = st.one_of(st.tuples(V4, V4), st.tuples(V6, V6))
payloads = st.one_of(st.binary(max_size=80), st.binary(min_size=1400, max_size=1500))
options = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    window_scale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    timestamps=st.none() | st.tuples(u32, u32),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=2).map(tuple),
)


def _fits(o: TcpOptions) -> bool:
    size = (4 if o.mss is not None else 0) + (12 if o.timestamps else 2 * o.sack_permitted)
    size += 4 if o.window_scale is not None else 0
    size += 4 + 8 * len(o.sack_blocks) if o.sack_blocks else 0
    return size <= 40


@SETTINGS
@given(pairs, u16, u16, u32, u32, st.integers(0, 255), u16, options.filter(_fits), payloads)
def test_rfc9293_build_tcp_accepted_by_scapy(
    addrs: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    opts: TcpOptions,
    payload: bytes,
) -> None:
    src, dst = addrs
    data = build_tcp(src, dst, sport, dport, seq, ack, flags, window, options=opts, payload=payload)
    assert scapy_recomputed(data) == data  # every checksum equals scapy's own
    s = upper_layer(parse_with_scapy(data))
    assert isinstance(s, TCP)
    assert (s.sport, s.dport, s.seq, s.ack, int(s.flags), s.window) == (
        sport,
        dport,
        seq,
        ack,
        flags,
        window,
    )
    assert bytes(s.payload) == payload
    seg = parse_transport(parse_ip(data))
    assert isinstance(seg, TcpSegment)
    assert seg.options == opts
    assert ip_address(parse_with_scapy(data).src) == src


@SETTINGS
@given(pairs, u16, u16, payloads)
def test_rfc768_build_udp_accepted_by_scapy(
    addrs: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
    sport: int,
    dport: int,
    payload: bytes,
) -> None:
    src, dst = addrs
    data = build_udp(src, dst, sport, dport, payload, hop_limit=7)
    assert scapy_recomputed(data) == data
    s = upper_layer(parse_with_scapy(data))
    assert isinstance(s, UDP)
    assert (s.sport, s.dport, s.len, bytes(s.payload)) == (sport, dport, 8 + len(payload), payload)
    assert s.chksum != 0  # RFC 8200 §8.1 / we always send a checksum


def test_rfc768_computed_zero_udp_checksum_is_sent_as_all_ones() -> None:
    # Find a payload whose checksum computes to zero: then the wire must carry 0xFFFF.
    src, dst = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
    base = build_udp(src, dst, 1, 2, b"\0\0")
    ck = base[46] << 8 | base[47]
    # Adding ck to the payload's only word makes the sum 0xFFFF: checksum 0 before mapping.
    data = build_udp(src, dst, 1, 2, ck.to_bytes(2, "big"))
    udp = parse_transport(parse_ip(data))
    assert isinstance(udp, UdpDatagram)
    assert udp.checksum == 0xFFFF
    assert udp.checksum_ok()


@SETTINGS
@given(pairs, u16, u16, st.binary(max_size=200), st.booleans())
def test_rfc792_rfc4443_build_echo_accepted_by_scapy(
    addrs: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
    ident: int,
    seq: int,
    data: bytes,
    reply: bool,
) -> None:
    src, dst = addrs
    packet = build_echo(src, dst, ident, seq, data, reply=reply)
    assert scapy_recomputed(packet) == packet
    echo = parse_transport(parse_ip(packet))
    assert isinstance(echo, Icmpv4Message | Icmpv6Message)
    assert (echo.identifier, echo.sequence, bytes(echo.data)) == (ident, seq, data)


@SETTINGS
@given(pairs, u16, u16, st.binary(max_size=300))
def test_rfc792_rfc4443_echo_reply_swaps_and_keeps_data(
    addrs: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
    ident: int,
    seq: int,
    data: bytes,
) -> None:
    src, dst = addrs
    request = parse_ip(build_echo(src, dst, ident, seq, data))
    if dst.is_multicast:
        with pytest.raises(PacketValueError):
            build_echo_reply(request)
        return
    reply = build_echo_reply(request)
    assert scapy_recomputed(reply) == reply
    packet = parse_ip(reply)
    echo = parse_transport(packet)
    assert (packet.src, packet.dst) == (dst, src)
    assert isinstance(echo, Icmpv4Message | Icmpv6Message)
    assert echo.type == (0 if src.version == 4 else 129)
    assert (echo.identifier, echo.sequence, bytes(echo.data)) == (ident, seq, data)
    assert response_to(request) == reply


def test_echo_reply_refuses_non_request() -> None:
    reply = parse_ip(build_echo(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 1, reply=True))
    with pytest.raises(PacketValueError):
        build_echo_reply(reply)
    udp = parse_ip(build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 1, b""))
    with pytest.raises(PacketValueError):
        build_echo_reply(udp)


@SETTINGS
@given(ip_packets())
def test_response_to_swaps_addresses_and_ports(built: Built) -> None:
    packet = parse_ip(built.data)
    assume("tcp" in built.expect or "udp" in built.expect)  # only they have ports to swap
    answer = response_to(packet, payload=b"hello")
    assert scapy_recomputed(answer) == answer
    back = parse_ip(answer)
    target = packet.final_destination if isinstance(packet, IPv6Packet) else packet.dst
    assert (back.src, back.dst) == (target, packet.src)
    assert back.dscp == packet.dscp and back.ecn == 0
    t, r = parse_transport(packet), parse_transport(back)
    assert isinstance(t, TcpSegment | UdpDatagram) and isinstance(r, TcpSegment | UdpDatagram)
    assert (r.src_port, r.dst_port) == (t.dst_port, t.src_port)
    assert bytes(r.payload) == b"hello"
    if isinstance(t, TcpSegment) and isinstance(r, TcpSegment):
        # RFC 9293 §3.4: acknowledge everything the segment occupied.
        assert r.ack == (t.seq + t.sequence_length) & 0xFFFFFFFF
        assert r.seq == t.ack and r.flags == TcpFlags.ACK and r.window == t.window
    if isinstance(back, IPv6Packet):
        assert isinstance(packet, IPv6Packet)
        assert back.flow_label == packet.flow_label


def test_response_to_tcp_syn_with_explicit_fields() -> None:
    syn = parse_ip(
        build_tcp(
            ip_address("2001:db8::1"),
            ip_address("64:ff9b::c000:201"),
            40000,
            443,
            1000,
            0,
            TcpFlags.SYN,
            64240,
            options=TcpOptions(mss=1440, window_scale=7),
        )
    )
    synack = parse_ip(
        response_to(
            syn,
            seq=5000,
            flags=TcpFlags.SYN | TcpFlags.ACK,
            window=65535,
            options=TcpOptions(mss=1400),
        )
    )
    seg = parse_transport(synack)
    assert isinstance(seg, TcpSegment)
    assert (seg.seq, seg.ack, seg.flags, seg.window) == (
        5000,
        1001,
        TcpFlags.SYN | TcpFlags.ACK,
        65535,
    )
    assert seg.options.mss == 1400
    assert (seg.src_port, seg.dst_port) == (443, 40000)


def test_response_to_refuses_other_protocols_and_fragments() -> None:
    error = parse_ip(
        build_icmp_error(
            build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b"x"),
            IcmpErrorKind.DESTINATION_UNREACHABLE,
            Unreachable.PORT,
            src=ip_address("192.0.2.2"),
        )
    )
    with pytest.raises(PacketValueError):
        response_to(error)
    fragment = bytearray(build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b"x"))
    fragment[6] |= 0x20  # MF
    with pytest.raises(PacketError) as info:
        response_to(parse_ip(fragment, verify_checksum=False))
    assert info.value.reason is Reason.FRAGMENT


# --- ICMP errors --------------------------------------------------------------------------


@SETTINGS
@given(ip_packets(), st.sampled_from(list(IcmpErrorKind)))
def test_rfc792_rfc4443_icmp_error_quotes_within_minimum_mtu(
    built: Built, kind: IcmpErrorKind
) -> None:
    packet = parse_ip(built.data)
    router = ip_address("192.0.2.254" if packet.version == 4 else "2001:db8::fe")
    try:
        data = build_icmp_error(built.data, kind, 0, src=router, mtu=1280, pointer=6)
    except PacketError as exc:
        assert exc.reason is Reason.NOT_ERROR_QUOTABLE
        return
    limit = 576 if packet.version == 4 else 1280  # RFC 1812 §4.3.2.3, RFC 4443 §2.4(c)
    assert len(data) == min(limit, len(built.data) + (28 if packet.version == 4 else 48))
    assert scapy_recomputed(data) == data
    err = parse_ip(data)
    assert (err.src, err.dst) == (router, packet.src)
    msg = parse_transport(err)
    assert isinstance(msg, Icmpv4Message | Icmpv6Message) and msg.is_error
    assert built.data.startswith(bytes(msg.quoted))
    quoted = parse_quoted(msg)
    assert (quoted.version, quoted.src, quoted.dst) == (packet.version, packet.src, packet.dst)
    assert quoted.protocol == packet.protocol
    if "tcp" in built.expect or "udp" in built.expect:
        t = parse_transport(packet)
        assert isinstance(t, TcpSegment | UdpDatagram)
        assert (quoted.src_port, quoted.dst_port) == (t.src_port, t.dst_port)
    else:
        assert quoted.src_port is None
    if kind is IcmpErrorKind.PACKET_TOO_BIG:
        assert msg.mtu == 1280
    if kind is IcmpErrorKind.PARAMETER_PROBLEM:
        assert msg.pointer == 6


def test_rfc4443_2_4_e_no_error_about_an_error_or_to_multicast() -> None:
    router = ip_address("2001:db8::fe")
    udp = build_udp(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 1, 2, b"x" * 2000)
    first = build_icmp_error(
        udp, IcmpErrorKind.DESTINATION_UNREACHABLE, Unreachable.PORT, src=router
    )
    assert len(first) == 1280
    with pytest.raises(PacketError) as info:
        build_icmp_error(first, IcmpErrorKind.TIME_EXCEEDED, src=router)
    assert info.value.reason is Reason.NOT_ERROR_QUOTABLE
    multicast = build_udp(ip_address("2001:db8::1"), ip_address("ff02::1"), 1, 2, b"x")
    with pytest.raises(PacketError):
        build_icmp_error(multicast, IcmpErrorKind.DESTINATION_UNREACHABLE, src=router)
    # (e.3) exception: Packet Too Big may be sent about a multicast packet.
    ptb = build_icmp_error(multicast, IcmpErrorKind.PACKET_TOO_BIG, src=router, mtu=1280)
    assert parse_ip(ptb).dst == ip_address("2001:db8::1")


def test_rfc1122_3_2_2_no_error_about_non_first_fragment_or_broadcast() -> None:
    router = ip_address("192.0.2.254")
    data = bytearray(build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b"x" * 16))
    data[7] = 2  # fragment offset 2 (16 bytes)
    with pytest.raises(PacketError):
        build_icmp_error(data, IcmpErrorKind.TIME_EXCEEDED, src=router)
    bcast = build_udp(ip_address("192.0.2.1"), ip_address("255.255.255.255"), 1, 2, b"")
    with pytest.raises(PacketError):
        build_icmp_error(bcast, IcmpErrorKind.DESTINATION_UNREACHABLE, src=router)


def test_rfc1191_fragmentation_needed_carries_next_hop_mtu() -> None:
    big = build_tcp(
        ip_address("198.51.100.1"), ip_address("192.0.2.2"), 1, 2, 0, 0, 0, 0, payload=b"y" * 1400
    )
    data = build_icmp_error(
        big, IcmpErrorKind.PACKET_TOO_BIG, src=ip_address("192.0.2.254"), mtu=1280
    )
    s = parse_with_scapy(data)
    assert (s.type, s.code, s.nexthopmtu) == (3, 4, 1280)
    assert len(data) == 576


def test_unreachable_codes_per_family() -> None:
    v4 = build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b"")
    v6 = build_udp(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 1, 2, b"")
    for cause, (c4, c6) in ((c, c.value) for c in Unreachable):
        e4 = parse_transport(
            parse_ip(
                build_icmp_error(
                    v4, IcmpErrorKind.DESTINATION_UNREACHABLE, cause, src=ip_address("192.0.2.2")
                )
            )
        )
        e6 = parse_transport(
            parse_ip(
                build_icmp_error(
                    v6, IcmpErrorKind.DESTINATION_UNREACHABLE, cause, src=ip_address("2001:db8::2")
                )
            )
        )
        assert isinstance(e4, Icmpv4Message) and isinstance(e6, Icmpv6Message)
        assert (e4.type, e4.code, e6.type, e6.code) == (3, c4, 1, c6)


# --- misuse -------------------------------------------------------------------------------


def test_builders_refuse_mixed_families_and_out_of_range_values() -> None:
    a4, a6 = ip_address("192.0.2.1"), ip_address("2001:db8::1")
    with pytest.raises(PacketValueError, match="one IP family"):
        build_udp(a4, a6, 1, 2, b"")
    with pytest.raises(PacketValueError):
        build_tcp(a4, a4, 70000, 2, 0, 0, 0, 0)
    with pytest.raises(PacketValueError):
        build_tcp(a6, a6, 1, 2, 1 << 32, 0, 0, 0)
    with pytest.raises(PacketValueError):
        build_udp(a4, a4, 1, 2, b"x" * 65530)
    with pytest.raises(PacketValueError):
        build_tcp(a4, a4, 1, 2, 0, 0, 0, 0, options=b"\x01\x01\x01")
    with pytest.raises(PacketValueError):
        build_tcp(a4, a4, 1, 2, 0, 0, 0, 0, options=TcpOptions(sack_blocks=((1, 2),) * 5))
    with pytest.raises(PacketValueError):
        build_icmp_error(build_udp(a4, a4, 1, 2, b""), IcmpErrorKind.PACKET_TOO_BIG, src=a4)
    with pytest.raises(PacketValueError):
        build_icmp_error(
            build_udp(a4, ip_address("192.0.2.2"), 1, 2, b""),
            IcmpErrorKind.TIME_EXCEEDED,
            Unreachable.PORT,
            src=a4,
        )


def test_build_64k_udp_v6() -> None:
    src, dst = ip_address("2001:db8::1"), ip_address("2001:db8::2")
    data = build_udp(src, dst, 9, 9, bytes(range(256)) * 255)
    udp = parse_transport(parse_ip(data))
    assert isinstance(udp, UdpDatagram) and udp.checksum_ok() and len(data) == 40 + 8 + 65280
    assert scapy_recomputed(data) == data


def test_rfc1122_3_2_2_source_must_be_one_host() -> None:
    router = ip_address("192.0.2.254")
    for source in ("0.0.0.0", "127.0.0.1", "224.0.0.5", "240.0.0.1", "255.255.255.255"):
        data = build_udp(ip_address(source), ip_address("192.0.2.2"), 1, 2, b"")
        packet = parse_ip(data)
        assert not error_allowed(packet, IcmpErrorKind.DESTINATION_UNREACHABLE), source
        with pytest.raises(PacketError):
            build_icmp_error(packet, IcmpErrorKind.DESTINATION_UNREACHABLE, src=router)
    ok = parse_ip(build_udp(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 1, 2, b""))
    assert error_allowed(ok, IcmpErrorKind.TIME_EXCEEDED)
    v6 = parse_ip(build_udp(ip_address("::"), ip_address("2001:db8::2"), 1, 2, b""))
    assert not error_allowed(v6, IcmpErrorKind.DESTINATION_UNREACHABLE)  # RFC 4443 §2.4(e.6)


def test_rfc8200_8_1_response_comes_from_the_final_destination() -> None:
    data = bytes.fromhex(
        (Path(__file__).parent.parent / "data" / "packets" / "ipv6_udp_routing.hex").read_text()
    )
    packet = parse_ip(data)
    answer = parse_ip(response_to(packet, payload=b"back"))
    assert (answer.src, answer.dst) == (ip_address("2001:db8::c"), ip_address("2001:db8::1"))
    udp = parse_transport(answer)
    assert isinstance(udp, UdpDatagram) and bytes(udp.payload) == b"back"


@SETTINGS
@given(pairs, u16, u16, u32, u32, st.integers(0, 255), payloads, st.booleans())
def test_partial_checksum_completes_to_the_full_one(
    addrs: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes,
    udp: bool,
) -> None:
    # CHECKSUM_PARTIAL: summing from the upper header on and storing the complement at the
    # checksum field gives exactly the packet a full build gives.
    src, dst = addrs
    if udp:
        full = build_udp(src, dst, sport, dport, payload)
        partial = bytearray(build_udp(src, dst, sport, dport, payload, partial_checksum=True))
        at = 6
    else:
        opts = TcpOptions(mss=1400)
        full = build_tcp(
            src, dst, sport, dport, seq, ack, flags, 1000, options=opts, payload=payload
        )
        partial = bytearray(
            build_tcp(
                src,
                dst,
                sport,
                dport,
                seq,
                ack,
                flags,
                1000,
                options=opts,
                payload=payload,
                partial_checksum=True,
            )
        )
        at = 16
    start = parse_ip(partial).upper_offset
    ck = internet_checksum(partial[start:])
    if udp and ck == 0:
        ck = 0xFFFF  # RFC 768, as the kernel does (CSUM_MANGLED_0)
    partial[start + at : start + at + 2] = ck.to_bytes(2, "big")
    assert bytes(partial) == full
