"""Fuzz: any bytes give a packet view or PacketError, never another exception, and
every property of whatever parsed can be read; parse then serialize is byte-identical."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy64.errors import PacketError, PacketFieldError
from proxy64.packet import (
    Icmpv4Message,
    Icmpv6Message,
    IPv4Packet,
    IPv6Packet,
    Reason,
    internet_checksum,
    parse_ip,
    parse_quoted,
    parse_transport,
)
from proxy64.packet.view import Absent
from tests.packet.scapy_oracle import Built, ip_packets

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Fields that exist only for some ICMP types: PacketFieldError is their documented answer.
TYPE_SPECIFIC = {"identifier", "sequence", "data", "quoted", "mtu", "pointer"}
METHODS = (
    "checksum_ok",
    "compute_checksum",
    "header_checksum_ok",
    "compute_header_checksum",
    "pseudo_header_sum",
)


def _public_names(obj: object) -> list[str]:
    names = []
    for klass in type(obj).__mro__:
        for name, value in vars(klass).items():
            if name.startswith("_") or isinstance(value, Absent) or callable(value):
                if name in METHODS:
                    names.append(name)
                continue
            names.append(name)
    return names


def touch_everything(obj: object) -> dict[str, Any]:
    """Read every public property and call every checksum method; return the values."""
    seen: dict[str, Any] = {}
    for name in _public_names(obj):
        try:
            value = getattr(obj, name)
            if name in METHODS:
                value = value()
            if isinstance(value, memoryview):
                value = value.tobytes()
            seen[name] = value
        except PacketFieldError:
            assert name in TYPE_SPECIFIC, name
        except PacketError:
            assert name == "options", name  # TCP options are parsed on access
    repr(obj)
    return seen


def parse_all(data: bytes | bytearray) -> None:
    try:
        packet = parse_ip(data)
    except PacketError:
        return
    touch_everything(packet)
    assert bytes(packet) == bytes(data[: len(packet)])
    for verify in (True, False):
        try:
            upper = parse_transport(packet, verify_checksum=verify)
        except PacketError:
            continue
        touch_everything(upper)
        if isinstance(upper, Icmpv4Message | Icmpv6Message) and upper.is_error:
            try:
                quoted = parse_quoted(upper)
            except PacketError:
                continue
            assert quoted.version in (4, 6) and quoted.upper_offset >= 20


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_packet_error(data: bytes) -> None:
    parse_all(data)


@st.composite
def plausible_ipv4(draw: st.DrawFn) -> bytes:
    # A header that passes the IPv4 checks, so the upper-layer parsers get fuzzed.
    options = draw(st.binary(max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4)))
    upper = draw(st.binary(max_size=120))
    proto = draw(st.sampled_from([1, 6, 17, 58, 0, 255]))
    flags_frag = draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, draw(st.integers(0, 0xFFFF))]))
    hl = 20 + len(options)
    total = hl + len(upper)
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | hl // 4,
            0,
            total,
            0,
            flags_frag,
            64,
            proto,
            0,
            draw(st.binary(min_size=4, max_size=4)),
            draw(st.binary(min_size=4, max_size=4)),
        )
        + options
    )
    ck = internet_checksum(header)
    header = header[:10] + ck.to_bytes(2, "big") + header[12:]
    return header + upper + draw(st.binary(max_size=4))


@st.composite
def plausible_ipv6(draw: st.DrawFn) -> bytes:
    body = bytearray()
    nh = draw(st.sampled_from([0, 43, 44, 60, 51, 6, 17, 58, 59]))
    first = nh
    for _ in range(draw(st.integers(0, 3))):
        nxt = draw(st.sampled_from([43, 44, 60, 51, 6, 17, 58, 0]))
        length = draw(st.integers(0, 3))
        ext = bytes([nxt, length]) + draw(st.binary(min_size=6, max_size=6))
        ext += draw(st.binary(min_size=length * 8, max_size=length * 8))
        body += ext
    body += draw(st.binary(max_size=80))
    header = struct.pack(
        "!IHBB16s16s",
        0x60000000,
        len(body),
        first,
        64,
        draw(st.binary(min_size=16, max_size=16)),
        draw(st.binary(min_size=16, max_size=16)),
    )
    return header + bytes(body)


@SETTINGS
@given(st.one_of(plausible_ipv4(), plausible_ipv6()))
def test_plausible_headers_with_garbage_upper_layers(data: bytes) -> None:
    parse_all(data)
    parse_all(bytearray(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ip_packets(), st.data())
def test_mutated_real_packets(built: Built, draw: st.DataObject) -> None:
    data = bytearray(built.data)
    for _ in range(draw.draw(st.integers(1, 4))):
        at = draw.draw(st.integers(0, len(data) - 1))
        data[at] = draw.draw(st.integers(0, 255))
    parse_all(data)
    cut = draw.draw(st.integers(0, len(data)))
    parse_all(data[:cut])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ip_packets())
def test_every_proper_prefix_is_refused_as_truncated(built: Built) -> None:
    # One-byte trickle: a packet cut anywhere is never mistaken for a whole one.
    data = built.data
    for cut in range(len(data)):
        with pytest.raises(PacketError) as info:
            parse_ip(data[:cut])
        assert (
            info.value.reason
            in {
                Reason.TRUNCATED,
                Reason.LENGTH_EXCEEDS_BUFFER,
                Reason.BAD_HEADER_CHECKSUM,  # IPv4 header cut inside the header
            }
            or cut == 0
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ip_packets(), st.binary(max_size=8))
def test_round_trip_byte_identical(built: Built, padding: bytes) -> None:
    # Link padding after the IP length is outside the view (RFC 791 Total Length).
    packet = parse_ip(built.data + padding)
    assert bytes(packet) == built.data
    again = parse_ip(bytes(packet))
    assert touch_everything(again) == touch_everything(packet)
    if "other" not in built.expect:
        upper = parse_transport(packet)
        assert bytes(upper.buffer) == built.data[packet.upper_offset :]


def test_declared_errors_carry_layer_reason_offset() -> None:
    cases: list[tuple[bytes, str, Reason, int]] = [
        (b"", "ip", Reason.TRUNCATED, 0),
        (b"\x50" + bytes(30), "ip", Reason.BAD_VERSION, 0),
        (b"\x45" + bytes(10), "ipv4", Reason.TRUNCATED, 11),
        (b"\x44" + bytes(19), "ipv4", Reason.BAD_HEADER_LENGTH, 0),
        (b"\x45\x00\x00\x10" + bytes(16), "ipv4", Reason.LENGTH_TOO_SMALL, 2),
        (b"\x45\x00\x00\x30" + bytes(16), "ipv4", Reason.LENGTH_EXCEEDS_BUFFER, 2),
        (b"\x45\x00\x00\x14" + bytes(16), "ipv4", Reason.BAD_HEADER_CHECKSUM, 10),
        (b"\x60" + bytes(20), "ipv6", Reason.TRUNCATED, 21),
        (b"\x60\0\0\0\0\x10\x06\x40" + bytes(32), "ipv6", Reason.LENGTH_EXCEEDS_BUFFER, 4),
        (b"\x60\0\0\0\0\0\x00\x40" + bytes(40), "ipv6", Reason.JUMBOGRAM, 4),
        (b"\x60\0\0\0\0\x04\x3c\x40" + bytes(36), "ipv6", Reason.BAD_EXTENSION_HEADER, 40),
        (
            b"\x60\0\0\0\0\x10\x3c\x40" + bytes(32) + b"\x00\x00" + bytes(6) + bytes(8),
            "ipv6",
            Reason.HOP_BY_HOP_NOT_FIRST,
            48,
        ),
    ]
    for data, layer, reason, offset in cases:
        with pytest.raises(PacketError) as info:
            parse_ip(data)
        assert (info.value.layer, info.value.reason, info.value.offset) == (layer, reason, offset)
        assert str(reason) in str(info.value)


def test_packet_kinds_are_the_two_views() -> None:
    v4 = parse_ip(bytes.fromhex("450000140000400040000000c0000201c0000202"), verify_checksum=False)
    assert isinstance(v4, IPv4Packet)
    v6 = parse_ip(b"\x60\0\0\0\0\0\x3b\x40" + bytes(32))
    assert isinstance(v6, IPv6Packet) and v6.protocol == 59 and not v6.payload


def _v4(upper: bytes, proto: int, *, options: bytes = b"") -> bytes:
    hl = 20 + len(options)
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | hl // 4,
            0,
            hl + len(upper),
            0,
            0,
            64,
            proto,
            0,
            bytes([192, 0, 2, 1]),
            bytes([192, 0, 2, 2]),
        )
        + options
    )
    ck = internet_checksum(header)
    return header[:10] + ck.to_bytes(2, "big") + header[12:] + upper


def _v6(upper: bytes, nh: int) -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s", 0x60000000, len(upper), nh, 64, bytes(15) + b"\1", bytes(15) + b"\2"
        )
        + upper
    )


def test_declared_upper_layer_errors() -> None:
    tcp_ok = bytes([0, 1, 0, 2]) + bytes(8) + bytes([0x50, 0x10]) + bytes(6)
    cases: list[tuple[bytes, str, Reason, int]] = [
        (
            _v4(b"\1\1\1\1\x00\x00\x00\x00", 17, options=b"\x07\x09\x00\x00"),
            "ipv4",
            Reason.BAD_IPV4_OPTION,
            20,
        ),
        (_v4(tcp_ok[:19], 6), "tcp", Reason.TRUNCATED, 39),
        (_v4(tcp_ok[:12] + b"\x40" + tcp_ok[13:], 6), "tcp", Reason.BAD_DATA_OFFSET, 32),
        (_v4(tcp_ok[:12] + b"\x60" + tcp_ok[13:], 6), "tcp", Reason.BAD_DATA_OFFSET, 32),
        (_v4(tcp_ok, 6), "tcp", Reason.BAD_CHECKSUM, 36),
        (_v4(bytes(7), 17), "udp", Reason.TRUNCATED, 27),
        (_v4(b"\0\1\0\2\0\x07\0\0", 17), "udp", Reason.BAD_UDP_LENGTH, 24),
        (_v4(b"\0\1\0\2\0\x09\0\0", 17), "udp", Reason.BAD_UDP_LENGTH, 24),
        (_v6(b"\0\1\0\2\0\x08\0\0", 17), "udp", Reason.ZERO_UDP_CHECKSUM_V6, 46),
        (_v4(b"\x08\0\0\0\0\0", 1), "icmpv4", Reason.TRUNCATED, 26),
        (_v4(b"\x08\0\0\0\0\0\0\0", 1), "icmpv4", Reason.BAD_CHECKSUM, 22),
        (_v6(b"\x80\0\0\0", 58), "icmpv6", Reason.TRUNCATED, 44),
        (_v4(b"\x80\0\0\0", 58), "ipv4", Reason.UNSUPPORTED_PROTOCOL, 20),
        (_v6(b"\x08\0\0\0\0\0\0\0", 1), "ipv6", Reason.UNSUPPORTED_PROTOCOL, 40),
    ]
    for data, layer, reason, offset in cases:
        with pytest.raises(PacketError) as info:
            parse_transport(parse_ip(data))
        assert (info.value.layer, info.value.reason, info.value.offset) == (layer, reason, offset)
    # A bad option length only shows when the options are read (they are parsed lazily).
    bad_mss = bytes([0, 1, 0, 2]) + bytes(8) + bytes([0x60, 0x02]) + bytes(6) + b"\x02\x05\0\0"
    seg = parse_transport(parse_ip(_v4(bad_mss, 6)), verify_checksum=False)
    with pytest.raises(PacketError) as info:
        _ = seg.options  # type: ignore[union-attr]
    assert (info.value.layer, info.value.reason, info.value.offset) == (
        "tcp",
        Reason.BAD_TCP_OPTION,
        40,
    )
