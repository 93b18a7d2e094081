"""Packets proxy64 writes to the app: TCP segments, UDP datagrams, echo replies, ICMP errors.

Every packet comes from the flow's remote end (the address the app dialed) to the app,
except ICMP errors, which come from the TUN gateway like a router's would. Checksums
are always computed (the codec's RFC 1071 sum), never left zero. ICMP errors quote as
much of the offending packet as fits the minimum MTU (RFC 4443 §2.4(c), RFC 1812 §4.3.2.3).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from proxy64.flow.segment import Segment
from proxy64.flow.wire import ICMP, ICMPV6, TCP, UDP, EchoIn, FlowKey
from proxy64.packet.checksum import finish, internet_checksum, pseudo_header_sum, sum_words

IPAddress = IPv4Address | IPv6Address

HOP_LIMIT = 64
IPV6_MIN_MTU = 1280  # RFC 8200 §5
IPV4_ERROR_QUOTE = 576  # RFC 1812 §4.3.2.3: an ICMP error fits in 576 bytes
_DF = 0x4000

# RFC 4443 §3.1 (ICMPv6 type 1) and RFC 792 / RFC 1812 §5.2.7.1 (ICMP type 3) codes.
ICMPV6_UNREACHABLE = 1
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_ECHO_REPLY = 129
ICMP_UNREACHABLE = 3
ICMP_TIME_EXCEEDED = 11
ICMP_ECHO_REPLY = 0
UNREACHABLE_CODES = {  # refusal name → (ICMPv6 code, ICMP code)
    "NO_ROUTE": (0, 0),
    "PROHIBITED": (1, 13),
    "ADDRESS_UNREACHABLE": (3, 1),
    "PORT_UNREACHABLE": (4, 3),
}


def ip_header(src: IPAddress, dst: IPAddress, protocol: int, payload_length: int) -> bytes:
    if isinstance(src, IPv6Address):
        return struct.pack(
            "!IHBB16s16s", 0x60000000, payload_length, protocol, HOP_LIMIT, src.packed, dst.packed
        )
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_length, 0, _DF, HOP_LIMIT, protocol, 0,
            src.packed, dst.packed,
        )
    )  # fmt: skip
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    return bytes(header)


def _transport(src: IPAddress, dst: IPAddress, protocol: int, body: bytearray, at: int) -> bytes:
    """Fill the checksum at offset `at` of body (pseudo-header included), prepend IP."""
    total = pseudo_header_sum(src, dst, protocol, len(body)) + sum_words(body)
    body[at : at + 2] = finish(total).to_bytes(2, "big")
    return ip_header(src, dst, protocol, len(body)) + body


def build_tcp(key: FlowKey, seg: Segment) -> bytes:
    options = b""
    if seg.mss is not None:
        options += struct.pack("!BBH", 2, 4, seg.mss)
    if seg.wscale is not None:
        options += struct.pack("!BBBB", 1, 3, 3, seg.wscale)  # NOP + window scale
    offset = (20 + len(options)) // 4
    header = struct.pack(
        "!HHIIBBHHH", key.remote[1], key.app[1], seg.seq, seg.ack, offset << 4, seg.flags,
        seg.window, 0, 0,
    )  # fmt: skip
    body = bytearray(header)
    body += options
    body += seg.payload
    return _transport(key.remote[0], key.app[0], TCP, body, 16)


def build_udp(key: FlowKey, payload: bytes) -> bytes:
    body = bytearray(struct.pack("!HHHH", key.remote[1], key.app[1], 8 + len(payload), 0))
    body += payload
    src, dst = key.remote[0], key.app[0]
    total = pseudo_header_sum(src, dst, UDP, len(body)) + sum_words(body)
    checksum = finish(total) or 0xFFFF  # RFC 768: a computed zero is sent as all ones
    body[6:8] = checksum.to_bytes(2, "big")
    return ip_header(src, dst, UDP, len(body)) + body


def build_echo_reply(echo: EchoIn) -> bytes:
    """RFC 4443 §4.2 / RFC 792: same identifier, sequence and data, from the address pinged."""
    if isinstance(echo.src, IPv6Address):
        body = bytearray(struct.pack("!BBHHH", ICMPV6_ECHO_REPLY, 0, 0, echo.ident, echo.sequence))
        body += echo.data
        return _transport(echo.dst, echo.src, ICMPV6, body, 2)
    body = bytearray(struct.pack("!BBHHH", ICMP_ECHO_REPLY, 0, 0, echo.ident, echo.sequence))
    body += echo.data
    body[2:4] = internet_checksum(body).to_bytes(2, "big")
    return ip_header(echo.dst, echo.src, ICMP, len(body)) + body


def build_icmp_error(
    original: bytes | bytearray | memoryview,
    gateway: IPAddress,
    kind: int,
    code: int,
    value: int = 0,
) -> bytes:
    """An ICMP(v6) error about `original` (a packet from the app), sent from gateway."""
    if original[0] >> 4 == 6:
        app = IPv6Address(bytes(original[8:24]))
        room = IPV6_MIN_MTU - 40 - 8
        body = bytearray(struct.pack("!BBHI", kind, code, 0, value)) + original[:room]
        return _transport(gateway, app, ICMPV6, body, 2)
    app4 = IPv4Address(bytes(original[12:16]))
    room = IPV4_ERROR_QUOTE - 20 - 8
    body = bytearray(struct.pack("!BBHI", kind, code, 0, value)) + original[:room]
    body[2:4] = internet_checksum(body).to_bytes(2, "big")
    return ip_header(gateway, app4, ICMP, len(body)) + body


def build_unreachable(
    original: bytes | bytearray | memoryview, gateway: IPAddress, refusal_name: str
) -> bytes:
    """Destination unreachable for a refused flow (RFC 4443 §3.1, RFC 792)."""
    code6, code4 = UNREACHABLE_CODES[refusal_name]
    if original[0] >> 4 == 6:
        return build_icmp_error(original, gateway, ICMPV6_UNREACHABLE, code6)
    return build_icmp_error(original, gateway, ICMP_UNREACHABLE, code4)


def build_reassembly_refused(original: bytes | bytearray | memoryview, gateway: IPAddress) -> bytes:
    """Fragments are not reassembled: answer like a host whose reassembly timed out
    (RFC 4443 §3.3 code 1, RFC 792 type 11 code 1), so the sender sees an error, not silence."""
    if original[0] >> 4 == 6:
        return build_icmp_error(original, gateway, ICMPV6_TIME_EXCEEDED, 1)
    return build_icmp_error(original, gateway, ICMP_TIME_EXCEEDED, 1)
