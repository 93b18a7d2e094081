"""Packets proxy64 writes to the app, built by the packet codec (proxy64.packet).

Every packet comes from the flow's remote end (the address the app dialed) to the app,
except ICMP errors, which come from the TUN gateway like a router's would. The codec
computes every checksum and refuses ICMP errors that must not be sent (about an ICMP
error, a multicast destination, ...: RFC 1122 §3.2.2, RFC 4443 §2.4(e)); those builders
return None here and the stack counts a drop.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from proxy64.defaults import PACKET_DEFAULT_HOP_LIMIT
from proxy64.errors import PacketError
from proxy64.flow.segment import Segment
from proxy64.flow.wire import EchoIn, FlowKey
from proxy64.packet import build_echo, build_tcp, build_udp, ip_header
from proxy64.packet.checksum import fold
from proxy64.packet.icmp_error import IcmpErrorKind, Unreachable, build_icmp_error
from proxy64.packet.tcp_options import NO_OPTIONS, TcpOptions, encode_tcp_options

IPAddress = IPv4Address | IPv6Address
TCP = 6
TCP_CHECKSUM_OFFSET = 16  # RFC 9293 §3.1: the checksum field within the TCP header
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
Buffer = bytes | bytearray | memoryview

UNREACHABLE = {  # Refusal name → the codec's destination-unreachable cause
    "NO_ROUTE": Unreachable.NETWORK,  # ICMPv6 1/0, ICMP 3/0
    "PROHIBITED": Unreachable.ADMIN_PROHIBITED,  # ICMPv6 1/1, ICMP 3/13
    "ADDRESS_UNREACHABLE": Unreachable.HOST,  # ICMPv6 1/3, ICMP 3/1
    "PORT_UNREACHABLE": Unreachable.PORT,  # ICMPv6 1/4, ICMP 3/3
}


def tcp_packet(key: FlowKey, seg: Segment) -> bytes:
    options: TcpOptions = NO_OPTIONS
    if seg.mss is not None or seg.wscale is not None:
        options = TcpOptions(mss=seg.mss, window_scale=seg.wscale)
    return build_tcp(
        key.remote[0], key.app[0], key.remote[1], key.app[1], seg.seq, seg.ack, seg.flags,
        seg.window, options=options, payload=seg.payload,
    )  # fmt: skip


def tcp_headers_partial(key: FlowKey, seg: Segment) -> tuple[bytes, int]:
    """The IP and TCP headers of tcp_packet() with a partial checksum (CHECKSUM_PARTIAL):
    the checksum field holds only the folded pseudo-header sum and the payload is never
    summed here; returns the headers (their lengths count seg.payload, which the caller
    writes after them: no copy of it here) and where the TCP header starts (virtio_net_hdr
    csum_start)."""
    options = b""
    if seg.mss is not None or seg.wscale is not None:
        options = encode_tcp_options(TcpOptions(mss=seg.mss, window_scale=seg.wscale))
    src, dst = key.remote[0], key.app[0]
    header_length = 20 + len(options)
    length = header_length + len(seg.payload)
    ip = ip_header(src, dst, TCP, length)
    partial = fold(int(src) + int(dst) + TCP + length)  # RFC 9293 §3.1 pseudo-header
    tcp = _TCP_HEADER.pack(
        key.remote[1], key.app[1], seg.seq, seg.ack, header_length << 2, seg.flags,
        seg.window, partial, 0,
    )  # fmt: skip
    return b"".join((ip, tcp, options)), len(ip)


_V6_TCP = struct.Struct("!IHBB16s16sHHIIBBHHH")  # RFC 8200 §3 header + RFC 9293 §3.1 header


class TcpHeaders:
    """tcp_headers_partial() for one flow, with what never changes computed once.

    The per-segment path at bulk speed: for an IPv6 flow and a segment without options
    (every segment after the SYN-ACK), one struct pack of both headers; the addresses,
    their pseudo-header sum (RFC 9293 §3.1) and the ports are kept. Anything else (IPv4,
    options) goes to tcp_headers_partial. Byte-exact with it (a test compares them)."""

    __slots__ = ("_base", "_dst", "_key", "_ports", "_src")

    def __init__(self, key: FlowKey) -> None:
        self._key = key
        src, dst = key.remote[0], key.app[0]
        self._src, self._dst = src.packed, dst.packed
        self._ports = (key.remote[1], key.app[1])
        # non-zero (TCP is in it), so fold(base + n) is (base + n) % 0xFFFF, 0 read as 0xFFFF
        self._base = (int(src) + int(dst) + TCP) % 0xFFFF if src.version == 6 else -1

    def headers(self, seg: Segment) -> tuple[bytes, int]:
        length = 20 + len(seg.payload)
        if self._base < 0 or seg.mss is not None or seg.wscale is not None or length > 0xFFFF:
            return tcp_headers_partial(self._key, seg)
        partial = (self._base + length) % 0xFFFF or 0xFFFF
        header = _V6_TCP.pack(
            0x60000000, length, TCP, PACKET_DEFAULT_HOP_LIMIT, self._src, self._dst,
            self._ports[0], self._ports[1], seg.seq, seg.ack, 5 << 4, seg.flags, seg.window,
            partial, 0,
        )  # fmt: skip
        return header, 40


def udp_packet(key: FlowKey, payload: Buffer) -> bytes:
    return build_udp(key.remote[0], key.app[0], key.remote[1], key.app[1], payload)


def echo_reply(echo: EchoIn) -> bytes:
    """RFC 4443 §4.2 / RFC 792: same identifier, sequence and data, from the address pinged."""
    return build_echo(echo.dst, echo.src, echo.ident, echo.sequence, echo.data, reply=True)


def unreachable(original: Buffer, gateway: IPAddress, refusal_name: str) -> bytes | None:
    """Destination unreachable about `original` (RFC 4443 §3.1, RFC 792), or None."""
    try:
        return build_icmp_error(
            original,
            IcmpErrorKind.DESTINATION_UNREACHABLE,
            UNREACHABLE[refusal_name],
            src=gateway,
        )
    except PacketError:
        return None


def reassembly_refused(original: Buffer, gateway: IPAddress) -> bytes | None:
    """Fragments are not reassembled: answer like a host whose reassembly timed out
    (RFC 4443 §3.3 code 1, RFC 792 type 11 code 1), so the sender sees an error, not
    silence. The codec refuses it for non-first fragments (None: dropped)."""
    try:
        return build_icmp_error(original, IcmpErrorKind.TIME_EXCEEDED, 1, src=gateway)
    except PacketError:
        return None
