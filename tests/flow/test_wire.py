"""decode(): every packet becomes one Inbound value; builders and decode agree."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.flow import build
from proxy64.flow.segment import ACK, PSH, SYN, Segment
from proxy64.flow.wire import (
    TCP,
    UDP,
    EchoIn,
    FlowKey,
    Ignored,
    Malformed,
    TcpIn,
    TooBig,
    UdpIn,
    decode,
)
from proxy64.packet import build_echo, build_tcp, build_udp
from tests.helpers.app_packets import APP4, APP6, GW6, REMOTE4, REMOTE6, app_tcp


def test_tcp_syn_options_roundtrip() -> None:
    syn = Segment(123, 0, SYN, 64800, mss=65460, wscale=7)
    inbound = decode(app_tcp(syn))
    assert isinstance(inbound, TcpIn)
    assert inbound.key == FlowKey(TCP, (APP6, 40000), (REMOTE6, 80))
    assert inbound.segment == syn


def test_tcp_ipv4_roundtrip() -> None:
    seg = Segment(1, 2, PSH | ACK, 100, b"data")
    inbound = decode(app_tcp(seg, APP4, REMOTE4))
    assert isinstance(inbound, TcpIn) and inbound.segment == seg
    assert inbound.key.version == 4


def test_tcp_bad_checksum_is_malformed() -> None:
    packet = bytearray(app_tcp(Segment(1, 2, ACK, 100, b"x")))
    packet[-1] ^= 0xFF
    assert decode(bytes(packet)) == Malformed("tcp-bad_checksum")


def test_udp_roundtrip_and_rfc8200_zero_checksum() -> None:
    packet = build_udp(APP6, REMOTE6, 5000, 53, b"query")
    assert decode(packet) == UdpIn(FlowKey(UDP, (APP6, 5000), (REMOTE6, 53)), b"query")
    zeroed = bytearray(packet)
    zeroed[46:48] = b"\0\0"
    assert decode(bytes(zeroed)) == Malformed("udp-zero_udp_checksum_v6")
    v4 = bytearray(build_udp(APP4, REMOTE4, 5000, 53, b"q4"))
    v4[26:28] = b"\0\0"  # RFC 768: zero means "no checksum" over IPv4
    assert isinstance(decode(bytes(v4)), UdpIn)


def test_echo_request_and_reply() -> None:
    request = build_echo(APP6, REMOTE6, 77, 3, b"abc")
    echo = decode(request)
    assert echo == EchoIn(APP6, REMOTE6, 77, 3, b"abc")
    reply = build.echo_reply(echo)
    assert reply == build_echo(REMOTE6, APP6, 77, 3, b"abc", reply=True)
    assert decode(reply) == Ignored("icmpv6-type-129")  # the app never sends us replies


def test_packet_too_big_names_our_flow() -> None:
    ours = build.tcp_packet(FlowKey(TCP, (APP6, 40000), (REMOTE6, 443)),
                            Segment(5, 6, ACK, 10, b"x" * 1400))  # fmt: skip
    from proxy64.packet import build_icmp

    ptb = build_icmp(APP6, REMOTE6, 2, 0, struct.pack("!I", 1280), ours[:1232])
    assert decode(ptb) == TooBig(FlowKey(TCP, (APP6, 40000), (REMOTE6, 443)), 1280)


def test_fragment_is_reported_not_parsed() -> None:
    packet = bytearray(build_udp(APP6, REMOTE6, 1, 2, b"y" * 16))
    # Insert a Fragment header (RFC 8200 §4.5) with offset 0 and M=1.
    frag = bytes([UDP, 0, 0, 1, 0, 0, 0, 9])
    packet[6] = 44
    packet[4:6] = (len(packet) - 40 + 8).to_bytes(2, "big")
    data = bytes(packet[:40]) + frag + bytes(packet[40:])
    inbound = decode(data)
    assert isinstance(inbound, Malformed) and inbound.fragment
    error = build.reassembly_refused(data, GW6)
    assert error is not None and error[40] == 3  # ICMPv6 Time Exceeded


def test_unreachable_is_not_sent_about_an_icmp_error() -> None:
    ours = build_udp(APP6, REMOTE6, 1, 2, b"z")
    assert build.unreachable(ours, GW6, "NO_ROUTE") is not None
    from proxy64.packet import build_icmp

    error = build_icmp(APP6, REMOTE6, 1, 0, b"\0" * 4, ours)
    assert build.unreachable(error, GW6, "NO_ROUTE") is None  # RFC 4443 §2.4(e.1)


def test_unknown_protocol_and_garbage() -> None:
    packet = bytearray(build_udp(APP6, REMOTE6, 1, 2, b""))
    packet[6] = 132  # SCTP
    assert decode(bytes(packet)) == Malformed("ipv6-unknown-protocol-132")
    assert decode(b"") == Malformed("ip-empty")
    assert decode(b"\x10" * 40) == Malformed("ip-bad_version")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert decode(data) is not None


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(
        [
            build_tcp(APP6, REMOTE6, 1, 2, 3, 4, SYN, 5, options=b"\x02\x04\x05\xb4"),
            build_tcp(APP4, REMOTE4, 1, 2, 3, 4, ACK, 5, payload=b"p" * 30),
            build_udp(APP6, REMOTE6, 1, 53, b"d" * 20),
            build_echo(APP6, REMOTE6, 1, 1, b"e" * 10),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_mutated_packets_only_decode_or_are_refused(
    packet: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(packet)
    for index, value in flips:
        if index < len(data):
            data[index] = value
    result = decode(bytes(data[: cut or len(data)]))
    assert isinstance(result, TcpIn | UdpIn | EchoIn | TooBig | Ignored | Malformed)
