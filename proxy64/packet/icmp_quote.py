# The invoking packet quoted in an ICMP error (RFC 792, RFC 1812 §4.3.2.3, RFC 4443 §3).
#
# A quote is cut short by design (8 bytes of upper layer for old IPv4 routers, at most
# 576/1280 bytes in all), so it is parsed leniently: the IP header must be complete, the
# lengths in it are not checked against the quote, and the ports are given when the
# quote holds them. Invariant: PacketError (TRUNCATED, WRONG_VERSION) or a value.
from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from proxy64.errors import PacketError, PacketFieldError
from proxy64.packet.fixup import PROTO_TCP, PROTO_UDP
from proxy64.packet.icmp import Icmpv4Message, Icmpv6Message
from proxy64.packet.reasons import Reason

_V6_EXTENSIONS = frozenset((0, 43, 44, 51, 60))  # RFC 8200 §4 headers walked in a quote


class QuotedPacket(NamedTuple):
    """What an ICMP error says about the packet that caused it."""

    version: int
    protocol: int
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address
    src_port: int | None  # TCP/UDP, when the quote reaches the ports
    dst_port: int | None
    upper_offset: int  # where the quoted upper layer starts within the quote


def parse_quoted(message: Icmpv4Message | Icmpv6Message) -> QuotedPacket:
    """The quoted packet of an ICMP error message (PacketFieldError if not an error)."""
    if not message.is_error:
        raise PacketFieldError(f"ICMP type {message.type} quotes no packet")
    quote = message.body
    base = message.ip.upper_offset + 8
    if isinstance(message, Icmpv4Message):
        layer = "icmpv4-quote"
        if len(quote) < 20:
            raise PacketError(layer, Reason.TRUNCATED, base + len(quote))
        if quote[0] >> 4 != 4:
            raise PacketError(layer, Reason.WRONG_VERSION, base)
        upper = (quote[0] & 0x0F) << 2
        if upper < 20:
            raise PacketError(layer, Reason.BAD_HEADER_LENGTH, base)
        if len(quote) < upper:
            raise PacketError(layer, Reason.TRUNCATED, base + len(quote))
        protocol = quote[9]
        src: IPv4Address | IPv6Address = IPv4Address(quote[12:16].tobytes())
        dst: IPv4Address | IPv6Address = IPv4Address(quote[16:20].tobytes())
        first = not ((quote[6] & 0x1F) or quote[7])  # ports only in a first fragment
        version = 4
    else:
        layer = "icmpv6-quote"
        if len(quote) < 40:
            raise PacketError(layer, Reason.TRUNCATED, base + len(quote))
        if quote[0] >> 4 != 6:
            raise PacketError(layer, Reason.WRONG_VERSION, base)
        protocol, upper, first = quote[6], 40, True
        while protocol in _V6_EXTENSIONS and upper + 8 <= len(quote):
            if protocol == 44:  # RFC 8200 §4.5: fixed 8 bytes; ports only at offset 0
                first = first and not (quote[upper + 2] << 8 | quote[upper + 3]) & 0xFFF8
                length = 8
            elif protocol == 51:  # RFC 4302 §2.2
                length = (quote[upper + 1] + 2) << 2
            else:
                length = (quote[upper + 1] + 1) << 3
            protocol, upper = quote[upper], upper + length
        src, dst, version = (
            IPv6Address(quote[8:24].tobytes()),
            IPv6Address(quote[24:40].tobytes()),
            6,
        )
    src_port = dst_port = None
    if first and protocol in (PROTO_TCP, PROTO_UDP) and upper + 4 <= len(quote):
        src_port = quote[upper] << 8 | quote[upper + 1]
        dst_port = quote[upper + 2] << 8 | quote[upper + 3]
    return QuotedPacket(version, protocol, src, dst, src_port, dst_port, upper)
