# Entry points: raw bytes to an IP packet view, an IP packet to its upper-layer view.
#
# Invariant: for any input these return a view or raise PacketError, nothing else (the
# hypothesis fuzz tests hold them to it).
from __future__ import annotations

from proxy64.errors import PacketError
from proxy64.packet.fixup import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from proxy64.packet.icmp import Icmpv4Message, Icmpv6Message
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.reasons import Reason
from proxy64.packet.tcp import TcpSegment
from proxy64.packet.udp import UdpDatagram
from proxy64.packet.view import Buffer, as_view

IpPacket = IPv4Packet | IPv6Packet
Transport = TcpSegment | UdpDatagram | Icmpv4Message | Icmpv6Message


def parse_ip(data: Buffer, *, verify_checksum: bool = True) -> IpPacket:
    """A view over the IP packet in data (version from the first nibble), no copy.

    A bytearray (or writable memoryview) gives a view whose setters rewrite it in place.
    verify_checksum checks the IPv4 header checksum (RFC 1122 §3.2.1.2 MUST).
    """
    mv = as_view(data)
    if not mv:
        raise PacketError("ip", Reason.TRUNCATED, 0)
    version = mv[0] >> 4
    if version == 4:
        return IPv4Packet.parse_view(mv, verify_checksum)
    if version == 6:
        return IPv6Packet.parse_view(mv)
    raise PacketError("ip", Reason.BAD_VERSION, 0)


def parse_transport(packet: IpPacket, *, verify_checksum: bool = True) -> Transport:
    """The upper-layer view of packet: TCP, UDP, ICMP (in IPv4) or ICMPv6 (in IPv6).

    Raises PacketError with Reason.FRAGMENT for fragments, Reason.UNSUPPORTED_PROTOCOL for
    anything else, Reason.BAD_CHECKSUM when verify_checksum and the checksum is wrong.
    """
    proto = packet.protocol
    if proto == PROTO_TCP:
        return TcpSegment.parse(packet, verify_checksum=verify_checksum)
    if proto == PROTO_UDP:
        return UdpDatagram.parse(packet, verify_checksum=verify_checksum)
    if proto == PROTO_ICMP and packet.version == 4:
        return Icmpv4Message.parse(packet, verify_checksum=verify_checksum)
    if proto == PROTO_ICMPV6 and packet.version == 6:
        return Icmpv6Message.parse(packet, verify_checksum=verify_checksum)
    raise PacketError(f"ipv{packet.version}", Reason.UNSUPPORTED_PROTOCOL, packet.upper_offset)
