# Building ICMP error messages about an offending packet (RFC 792, RFC 1122 §3.2.2,
# RFC 1812 §4.3.2.3, RFC 4443 §2.4 and §3).
#
# Invariants: the error goes back to the offending packet's source; it quotes as much of
# the offending packet as fits in 576 bytes (IPv4) or 1280 bytes (IPv6, §2.4(c)); it is
# never built about a packet that must not get one (an ICMP error, a non-first fragment,
# a multicast/broadcast destination, a source that is not one host): PacketError
# Reason.NOT_ERROR_QUOTABLE then, so the caller drops silently.
from __future__ import annotations

import enum
import struct
from ipaddress import IPv4Address, IPv6Address

from proxy64.defaults import ICMPV4_ERROR_MAX, ICMPV6_ERROR_MAX, PACKET_DEFAULT_HOP_LIMIT
from proxy64.errors import PacketError, PacketValueError
from proxy64.packet.build import build_icmp, family_of
from proxy64.packet.fixup import PROTO_ICMP, PROTO_ICMPV6
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.parse import parse_ip
from proxy64.packet.reasons import Reason
from proxy64.packet.view import Buffer

_V4_ERRORS = frozenset((3, 4, 5, 11, 12))
_V6_REDIRECT = 137  # RFC 4861 §4.5; RFC 4443 §2.4(e.2)
_BROADCAST = IPv4Address("255.255.255.255")


class IcmpErrorKind(enum.Enum):
    """The error, independent of family; mapped to (ICMPv4 type, ICMPv6 type)."""

    DESTINATION_UNREACHABLE = (3, 1)
    PACKET_TOO_BIG = (3, 2)  # ICMPv4: type 3 code 4 "fragmentation needed" (RFC 1191)
    TIME_EXCEEDED = (11, 3)
    PARAMETER_PROBLEM = (12, 4)


class Unreachable(enum.Enum):
    """Destination-unreachable causes with their (ICMPv4, ICMPv6) codes."""

    NETWORK = (0, 0)  # RFC 792 net unreachable; RFC 4443 §3.1 no route
    HOST = (1, 3)  # RFC 792 host unreachable; RFC 4443 address unreachable
    PORT = (3, 4)  # RFC 792 / RFC 4443 port unreachable
    ADMIN_PROHIBITED = (13, 1)  # RFC 1812 §5.2.7.1; RFC 4443 administratively prohibited


def error_allowed(packet: IPv4Packet | IPv6Packet, kind: IcmpErrorKind) -> bool:
    """Whether an ICMP error may be sent about packet (RFC 1122 §3.2.2, RFC 4443 §2.4(e))."""
    payload = packet.payload
    if isinstance(packet, IPv4Packet):
        if packet.fragment_offset:
            return False  # not about a fragment other than the first
        if packet.protocol == PROTO_ICMP and payload and payload[0] in _V4_ERRORS:
            return False  # never about an ICMP error
        dst, src = packet.dst, packet.src
        if dst.is_multicast or dst == _BROADCAST:
            return False
        return not (
            src.is_unspecified
            or src.is_multicast
            or src.is_loopback
            or src.is_reserved
            or src == _BROADCAST
        )
    if (
        packet.fragment_offset == 0
        and packet.protocol == PROTO_ICMPV6
        and payload
        and (payload[0] < 128 or payload[0] == _V6_REDIRECT)
    ):
        return False  # (e.1), (e.2)
    if packet.dst.is_multicast and kind not in (
        IcmpErrorKind.PACKET_TOO_BIG,
        IcmpErrorKind.PARAMETER_PROBLEM,
    ):
        return False  # (e.3); the parameter-problem exception is code 2 only, checked below
    return not (packet.src.is_unspecified or packet.src.is_multicast)  # (e.6)


def build_icmp_error(
    offending: Buffer | IPv4Packet | IPv6Packet,
    kind: IcmpErrorKind,
    code: int | Unreachable = 0,
    *,
    src: IPv4Address | IPv6Address,
    mtu: int | None = None,
    pointer: int | None = None,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
) -> bytes:
    """A whole IP packet: an ICMP(v6) error from src to the offending packet's source.

    mtu is required for PACKET_TOO_BIG, pointer for PARAMETER_PROBLEM. Raises PacketError
    when offending does not parse or must not get an error, PacketValueError on misuse.
    """
    if isinstance(offending, IPv4Packet | IPv6Packet):
        pkt = offending
    else:
        pkt = parse_ip(offending, verify_checksum=False)
    family_of(src, pkt.src)
    v6 = pkt.version == 6
    if isinstance(code, Unreachable):
        if kind is not IcmpErrorKind.DESTINATION_UNREACHABLE:
            raise PacketValueError(
                f"icmp: {code} is a destination-unreachable code, not {kind.name}"
            )
        code = code.value[v6]
    if kind is IcmpErrorKind.PACKET_TOO_BIG:
        code = 0 if v6 else 4
    if not error_allowed(pkt, kind) or (
        v6 and pkt.dst.is_multicast and kind is IcmpErrorKind.PARAMETER_PROBLEM and code != 2
    ):
        raise PacketError("icmpv6" if v6 else "icmpv4", Reason.NOT_ERROR_QUOTABLE, 0)
    rest = _rest_of_header(kind, v6, mtu, pointer)
    limit = (ICMPV6_ERROR_MAX - 48) if v6 else (ICMPV4_ERROR_MAX - 28)
    quote = pkt.buffer[:limit]
    type_ = kind.value[v6]
    return build_icmp(src, pkt.src, type_, code, rest, quote, hop_limit=hop_limit)


def _rest_of_header(kind: IcmpErrorKind, v6: bool, mtu: int | None, pointer: int | None) -> bytes:
    try:
        if kind is IcmpErrorKind.PACKET_TOO_BIG:
            if mtu is None:
                raise PacketValueError("icmp: PACKET_TOO_BIG needs mtu=")
            # RFC 4443 §3.2: 32-bit MTU; RFC 1191 §4: 16-bit next-hop MTU in bytes 6-7.
            return struct.pack("!I", mtu) if v6 else struct.pack("!HH", 0, mtu)
        if kind is IcmpErrorKind.PARAMETER_PROBLEM:
            if pointer is None:
                raise PacketValueError("icmp: PARAMETER_PROBLEM needs pointer=")
            # RFC 4443 §3.4: 32-bit pointer; RFC 792: one-byte pointer then 3 unused.
            return struct.pack("!I", pointer) if v6 else struct.pack("!B3x", pointer)
    except struct.error as exc:
        raise PacketValueError(f"icmp: mtu/pointer out of range: {exc}") from None
    return bytes(4)
