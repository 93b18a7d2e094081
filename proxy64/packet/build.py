# Builders: whole IP packets (header + TCP/UDP/ICMP echo) as bytes, checksums included.
#
# Invariants: the family comes from the addresses (both must match); every checksum is
# computed from the data (RFC 791 §3.1 header, RFC 9293 §3.1 / RFC 768 / RFC 4443 §2.3
# with the family's pseudo-header, RFC 792 for ICMPv4); a UDP checksum that computes to
# zero is sent as 0xFFFF (RFC 768, RFC 8200 §8.1); out-of-range values raise
# PacketValueError. Each header is packed once, after its checksum is known from integer
# sums, so a build costs one pass over the payload.
from __future__ import annotations

import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from proxy64.defaults import PACKET_DEFAULT_HOP_LIMIT
from proxy64.errors import PacketValueError
from proxy64.packet.checksum import finish, fold, sum_words
from proxy64.packet.fixup import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from proxy64.packet.tcp import TcpFlags
from proxy64.packet.tcp_options import TcpOptions, encode_tcp_options
from proxy64.packet.view import Buffer

Address = IPv4Address | IPv6Address

_V4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_V6_HEADER = struct.Struct("!IHBB16s16s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_UDP_HEADER = struct.Struct("!HHHH")
_ICMP_ECHO = struct.Struct("!BBHHH")
_DF = 0x4000  # RFC 791 §3.1 flags, shifted into the flags/offset word


def family_of(src: Address, dst: Address) -> int:
    """4 or 6; PacketValueError when the two addresses are of different families."""
    if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
        return 4
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        return 6
    raise PacketValueError(f"source {src!r} and destination {dst!r} must be one IP family")


def ip_header(
    src: Address,
    dst: Address,
    protocol: int,
    payload_length: int,
    *,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
    traffic_class: int = 0,
    flow_label: int = 0,
    identification: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    """A 20-byte IPv4 header (no options, checksum set) or a 40-byte IPv6 header."""
    try:
        if family_of(src, dst) == 4:
            total = 20 + payload_length
            if total > 0xFFFF:
                raise PacketValueError(f"ipv4: total length {total} exceeds 65535 (RFC 791)")
            flags = _DF if dont_fragment else 0
            ck = finish(
                0x4500
                + traffic_class
                + total
                + identification
                + flags
                + (hop_limit << 8 | protocol)
                + int(src)
                + int(dst)
            )
            return _V4_HEADER.pack(
                0x45,
                traffic_class,
                total,
                identification,
                flags,
                hop_limit,
                protocol,
                ck,
                src.packed,
                dst.packed,
            )
        if payload_length > 0xFFFF:
            raise PacketValueError(
                f"ipv6: payload length {payload_length} exceeds 65535 (jumbograms unsupported)"
            )
        if not 0 <= flow_label < 1 << 20 or not 0 <= traffic_class <= 0xFF:
            raise PacketValueError("ipv6: traffic class or flow label out of range")
        first = 0x60000000 | traffic_class << 20 | flow_label
        return _V6_HEADER.pack(first, payload_length, protocol, hop_limit, src.packed, dst.packed)
    except struct.error as exc:
        raise PacketValueError(f"ip header field out of range: {exc}") from None


def build_tcp(  # noqa: PLR0917 - positional order is the documented API
    src: Address,
    dst: Address,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: TcpFlags | int,
    window: int,
    *,
    options: TcpOptions | Buffer = b"",
    payload: Buffer = b"",
    urgent: int = 0,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
    traffic_class: int = 0,
    flow_label: int = 0,
    identification: int = 0,
    partial_checksum: bool = False,
) -> bytes:
    """A whole IP packet carrying one TCP segment (RFC 9293 §3.1).

    partial_checksum: the checksum field holds only the folded pseudo-header sum and the
    payload is not summed (Linux CHECKSUM_PARTIAL: whoever finishes it sums the segment
    from the TCP header on and stores the complement, e.g. a TUN with virtio_net_hdr).
    """
    opts = encode_tcp_options(options) if isinstance(options, TcpOptions) else bytes(options)
    if len(opts) % 4 or len(opts) > 40:
        raise PacketValueError(
            f"tcp: raw options must be 0-40 bytes, a multiple of 4, not {len(opts)}"
        )
    hl = 20 + len(opts)
    length = hl + len(payload)
    ip = ip_header(
        src,
        dst,
        PROTO_TCP,
        length,
        hop_limit=hop_limit,
        traffic_class=traffic_class,
        flow_label=flow_label,
        identification=identification,
    )
    pseudo = int(src) + int(dst) + PROTO_TCP + length  # pseudo-header, both families
    if partial_checksum:
        try:
            tcp = _TCP_HEADER.pack(
                src_port, dst_port, seq, ack, hl << 2, flags, window, fold(pseudo), urgent
            )
        except struct.error as exc:
            raise PacketValueError(f"tcp: header field out of range: {exc}") from None
        return b"".join((ip, tcp, opts, payload))
    total = (
        pseudo
        + src_port
        + dst_port
        + seq
        + ack
        + (hl << 10 | flags)
        + window
        + urgent
        + sum_words(opts)
        + sum_words(payload)
    )
    try:
        tcp = _TCP_HEADER.pack(
            src_port, dst_port, seq, ack, hl << 2, flags, window, finish(total), urgent
        )
    except struct.error as exc:
        raise PacketValueError(f"tcp: header field out of range: {exc}") from None
    return b"".join((ip, tcp, opts, payload))


def build_udp(
    src: Address,
    dst: Address,
    src_port: int,
    dst_port: int,
    payload: Buffer,
    *,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
    traffic_class: int = 0,
    flow_label: int = 0,
    identification: int = 0,
    partial_checksum: bool = False,
) -> bytes:
    """A whole IP packet carrying one UDP datagram (RFC 768), checksum always present.

    partial_checksum: as for build_tcp, the field holds the folded pseudo-header sum.
    """
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise PacketValueError(f"udp: length {length} exceeds 65535 (RFC 768)")
    ip = ip_header(
        src,
        dst,
        PROTO_UDP,
        length,
        hop_limit=hop_limit,
        traffic_class=traffic_class,
        flow_label=flow_label,
        identification=identification,
    )
    pseudo = int(src) + int(dst) + PROTO_UDP + length
    if partial_checksum:
        ck = fold(pseudo)
    else:
        total = pseudo + src_port + dst_port + length + sum_words(payload)
        ck = finish(total) or 0xFFFF  # RFC 768: computed zero sent as ~0
    try:
        udp = _UDP_HEADER.pack(src_port, dst_port, length, ck)
    except struct.error as exc:
        raise PacketValueError(f"udp: header field out of range: {exc}") from None
    return b"".join((ip, udp, payload))


def build_icmp(  # noqa: PLR0917 - type, code, rest, body read like the RFC
    src: Address,
    dst: Address,
    type_: int,
    code: int,
    rest_of_header: bytes,
    body: Buffer | Sequence[Buffer] = b"",
    *,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """A whole IP packet carrying one ICMPv4 (IPv4) or ICMPv6 (IPv6) message.

    rest_of_header is the 4 bytes after the checksum; body may be several buffers, joined.
    """
    if len(rest_of_header) != 4 or not 0 <= type_ <= 0xFF or not 0 <= code <= 0xFF:
        raise PacketValueError("icmp: type/code must fit a byte and rest_of_header be 4 bytes")
    parts = [body] if isinstance(body, bytes | bytearray | memoryview) else list(body)
    length = 8 + sum(len(p) for p in parts)
    v6 = family_of(src, dst) == 6
    proto = PROTO_ICMPV6 if v6 else PROTO_ICMP
    ip = ip_header(
        src,
        dst,
        proto,
        length,
        hop_limit=hop_limit,
        traffic_class=traffic_class,
        flow_label=flow_label,
    )
    # RFC 4443 §2.3: ICMPv6 covers the pseudo-header; RFC 792: ICMPv4 the message only.
    total = (int(src) + int(dst) + proto + length) if v6 else 0
    total += (type_ << 8 | code) + sum_words(rest_of_header)
    offset = 0
    for p in parts:
        # A part starting at an odd offset has its words shifted by one byte: times 256.
        total += sum_words(p) << 8 if offset & 1 else sum_words(p)
        offset += len(p)
    head = struct.pack("!BBH", type_, code, finish(total)) + bytes(rest_of_header)
    return b"".join((ip, head, *parts))


def build_echo(
    src: Address,
    dst: Address,
    identifier: int,
    sequence: int,
    data: Buffer = b"",
    *,
    reply: bool = False,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
) -> bytes:
    """An echo request (or reply): ICMPv4 type 8/0 (RFC 792), ICMPv6 128/129 (RFC 4443 §4)."""
    v4 = family_of(src, dst) == 4
    type_ = (0 if reply else 8) if v4 else (129 if reply else 128)
    try:
        rest = struct.pack("!HH", identifier, sequence)
    except struct.error as exc:
        raise PacketValueError(f"icmp echo: identifier/sequence out of range: {exc}") from None
    return build_icmp(src, dst, type_, 0, rest, data, hop_limit=hop_limit)
