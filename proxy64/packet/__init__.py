# proxy64.packet: the pure IP packet codec (IPv4, IPv6, TCP, UDP, ICMPv4, ICMPv6).
#
# No I/O, no clock (ruff bans trio/socket/time here). Views read and write fields in place
# over the caller's buffer; builders return whole IP packets as bytes.
#
# Public API (stable; TUN mode codes against it):
#
#   parse_ip(data, *, verify_checksum=True) -> IPv4Packet | IPv6Packet
#       No copy. bytes -> read-only view; bytearray -> setters rewrite it in place and keep
#       every checksum covering the field valid (RFC 1624 incremental update).
#   parse_transport(packet, *, verify_checksum=True)
#       -> TcpSegment | UdpDatagram | Icmpv4Message | Icmpv6Message
#   Every parser raises only PacketError(layer, reason: Reason, offset) on bad input;
#   Reason.FRAGMENT for fragments (check packet.is_fragment first to count them apart).
#
#   IPv4Packet / IPv6Packet common: version src dst src_packed dst_packed protocol
#       (upper layer, after IPv6 extension headers) hop_limit payload upper_offset
#       header_length total_length is_fragment fragment_offset more_fragments dscp ecn
#       buffer, bytes(p), len(p), pseudo_header_sum(length=None)
#     IPv4 only: ihl options tos total_length identification flags (Ipv4Flags)
#       dont_fragment ttl checksum header_checksum_ok() compute_header_checksum()
#       update_header_checksum()
#     IPv6 only: traffic_class flow_label payload_length next_header extension_headers
#       (tuple of ExtensionHeader(kind, offset, length)) fragment_identification
#     A field the version lacks raises PacketFieldError (an AttributeError).
#   TcpSegment: src_port dst_port seq ack data_offset header_length reserved flags
#       (TcpFlags) window checksum urgent options (TcpOptions, parsed on access)
#       options_bytes payload sequence_length checksum_ok() compute_checksum()
#       update_checksum() ip buffer
#   UdpDatagram: src_port dst_port length checksum payload + the checksum methods
#   Icmpv4Message / Icmpv6Message: type code checksum rest_of_header body is_echo
#       is_error identifier sequence data (echo only) quoted (errors) mtu pointer
#       + the checksum methods
#
#   build_tcp(src, dst, src_port, dst_port, seq, ack, flags, window, *, options=b"" |
#       TcpOptions, payload=b"", urgent=0, hop_limit=64, traffic_class=0, flow_label=0,
#       identification=0, partial_checksum=False) -> bytes
#   build_udp(src, dst, src_port, dst_port, payload, *, hop_limit=64, ...) -> bytes
#   build_echo(src, dst, identifier, sequence, data=b"", *, reply=False) -> bytes
#   build_icmp(src, dst, type_, code, rest_of_header, body) -> bytes
#   build_icmp_error(offending, kind: IcmpErrorKind, code=0 | Unreachable, *, src,
#       mtu=None, pointer=None) -> bytes   (576 / 1280-byte limits; refuses with
#       PacketError Reason.NOT_ERROR_QUOTABLE when no error may be sent); error_allowed()
#   parse_quoted(icmp_error_message) -> QuotedPacket(version, protocol, src, dst, src_port,
#       dst_port, upper_offset): the invoking packet of an error, parsed leniently
#   build_echo_reply(request, *, src=None) -> bytes
#   response_to(packet, *, payload=None, seq=None, ack=None, flags=ACK, window=None,
#       options=b"") -> bytes        copy the client's headers, swap, fresh checksums
#
#   Checksums: internet_checksum(data, initial=0), sum_words, fold, finish, verifies, adjust16,
#       pseudo_header_sum(src, dst, protocol, length), update_checksum(old_checksum,
#       old_field_bytes, new_field_bytes) (RFC 1624 eqn. 3), update_checksum_words.
#   TCP options: TcpOptions, NO_OPTIONS, parse_tcp_options(area), encode_tcp_options(options).
#   Read-only attributes set at parse (plain slots, for speed; never assign): buffer,
#   protocol, upper_offset, is_fragment, IPv4 header_length/total_length, IPv6
#   extension_headers.
#
# Errors: PacketError (bad packet from a peer), PacketFieldError / PacketValueError
# (misuse by our own code), all in proxy64.errors.
from __future__ import annotations

from proxy64.errors import PacketError, PacketFieldError, PacketValueError
from proxy64.packet.build import build_echo, build_icmp, build_tcp, build_udp, ip_header
from proxy64.packet.checksum import (
    adjust16,
    finish,
    fold,
    internet_checksum,
    pseudo_header_sum,
    sum_words,
    update_checksum,
    update_checksum_words,
    verifies,
)
from proxy64.packet.fixup import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from proxy64.packet.icmp import Icmpv4Message, Icmpv4Type, Icmpv6Message, Icmpv6Type
from proxy64.packet.icmp_error import IcmpErrorKind, Unreachable, build_icmp_error, error_allowed
from proxy64.packet.icmp_quote import QuotedPacket, parse_quoted
from proxy64.packet.ipv4 import Ipv4Flags, IPv4Packet
from proxy64.packet.ipv6 import ExtensionHeader, IPv6Packet
from proxy64.packet.parse import IpPacket, Transport, parse_ip, parse_transport
from proxy64.packet.reasons import Reason
from proxy64.packet.response import build_echo_reply, response_to
from proxy64.packet.tcp import TcpFlags, TcpSegment
from proxy64.packet.tcp_options import (
    NO_OPTIONS,
    TcpOptions,
    encode_tcp_options,
    parse_tcp_options,
)
from proxy64.packet.udp import UdpDatagram

__all__ = [
    "NO_OPTIONS",
    "PROTO_ICMP",
    "PROTO_ICMPV6",
    "PROTO_TCP",
    "PROTO_UDP",
    "ExtensionHeader",
    "IPv4Packet",
    "IPv6Packet",
    "IcmpErrorKind",
    "Icmpv4Message",
    "Icmpv4Type",
    "Icmpv6Message",
    "Icmpv6Type",
    "IpPacket",
    "Ipv4Flags",
    "PacketError",
    "PacketFieldError",
    "PacketValueError",
    "QuotedPacket",
    "Reason",
    "TcpFlags",
    "TcpOptions",
    "TcpSegment",
    "Transport",
    "UdpDatagram",
    "Unreachable",
    "adjust16",
    "build_echo",
    "build_echo_reply",
    "build_icmp",
    "build_icmp_error",
    "build_tcp",
    "build_udp",
    "encode_tcp_options",
    "error_allowed",
    "finish",
    "fold",
    "internet_checksum",
    "ip_header",
    "parse_ip",
    "parse_quoted",
    "parse_tcp_options",
    "parse_transport",
    "pseudo_header_sum",
    "response_to",
    "sum_words",
    "update_checksum",
    "update_checksum_words",
    "verifies",
]
