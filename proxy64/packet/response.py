# The "origin design" responder: answer a client's packet as its destination would.
#
# Copy what the client chose (DSCP, IPv6 flow label, ports), swap source and destination
# (the final destination when an IPv6 Routing header has segments left, RFC 8200 §8.1),
# put in new lengths, payload and TCP sequence numbers, compute fresh checksums. IPv4
# options and IPv6 extension headers are not copied (the answer is a plain datagram); the
# ECN bits are cleared (we do not claim ECN capability, RFC 3168 §6.1.1).
from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from proxy64.defaults import PACKET_DEFAULT_HOP_LIMIT
from proxy64.errors import PacketValueError
from proxy64.packet.build import build_echo, build_tcp, build_udp
from proxy64.packet.icmp import Icmpv4Message, Icmpv6Message
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.parse import parse_transport
from proxy64.packet.tcp import TcpFlags, TcpSegment
from proxy64.packet.tcp_options import TcpOptions
from proxy64.packet.udp import UdpDatagram
from proxy64.packet.view import Buffer


def _target(packet: IPv4Packet | IPv6Packet) -> IPv4Address | IPv6Address:
    # RFC 8200 §8.1: with a Routing header the packet is for its final destination.
    return packet.final_destination if isinstance(packet, IPv6Packet) else packet.dst


def build_echo_reply(
    request: IPv4Packet | IPv6Packet,
    *,
    src: IPv4Address | IPv6Address | None = None,
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
) -> bytes:
    """The echo reply to an echo request: same identifier, sequence and data, addresses
    swapped (RFC 792 "Echo or Echo Reply Message", RFC 4443 §4.2).

    src overrides the reply's source; it is required when the request went to a multicast
    address (RFC 4443 §4.2: the reply comes from a unicast address).
    """
    msg = parse_transport(request, verify_checksum=False)
    want = 8 if request.version == 4 else 128
    if not isinstance(msg, Icmpv4Message | Icmpv6Message) or msg.type != want:
        raise PacketValueError(f"not an echo request: {msg!r}")
    if src is None:
        target = _target(request)
        if target.is_multicast:
            raise PacketValueError("echo request to a multicast address: pass src= (RFC 4443 §4.2)")
        src = target
    return build_echo(
        src,
        request.src,
        msg.identifier,
        msg.sequence,
        msg.data,
        reply=True,
        hop_limit=hop_limit,
    )


def response_to(
    packet: IPv4Packet | IPv6Packet,
    *,
    payload: Buffer | None = None,
    seq: int | None = None,
    ack: int | None = None,
    flags: TcpFlags | int = TcpFlags.ACK,
    window: int | None = None,
    options: TcpOptions | Buffer = b"",
    hop_limit: int = PACKET_DEFAULT_HOP_LIMIT,
) -> bytes:
    """A whole IP packet answering packet, from its destination back to its source.

    TCP: ports swapped; seq defaults to the client's ACK number, ack to the client's
    sequence number plus the sequence space it used (RFC 9293 §3.4), window to the
    client's window, flags to ACK. UDP: ports swapped. ICMP echo request: the echo reply
    (payload defaults to the request's data). payload defaults to empty otherwise.
    Raises PacketError for what parse_transport refuses (fragments, other protocols),
    PacketValueError for an ICMP message that is not an echo request.
    """
    t = parse_transport(packet, verify_checksum=False)
    if isinstance(packet, IPv4Packet):
        tc, flow = packet.tos & 0xFC, 0
    else:
        tc, flow = packet.traffic_class & 0xFC, packet.flow_label
    src, dst = _target(packet), packet.src
    if isinstance(t, TcpSegment):
        return build_tcp(
            src,
            dst,
            t.dst_port,
            t.src_port,
            t.ack if seq is None else seq,
            (t.seq + t.sequence_length) & 0xFFFFFFFF if ack is None else ack,
            flags,
            t.window if window is None else window,
            options=options,
            payload=b"" if payload is None else payload,
            hop_limit=hop_limit,
            traffic_class=tc,
            flow_label=flow,
        )
    if isinstance(t, UdpDatagram):
        return build_udp(
            src,
            dst,
            t.dst_port,
            t.src_port,
            b"" if payload is None else payload,
            hop_limit=hop_limit,
            traffic_class=tc,
            flow_label=flow,
        )
    if t.type != (8 if packet.version == 4 else 128):
        raise PacketValueError(f"cannot answer ICMP type {t.type}: only echo requests")
    return build_echo(
        src,
        dst,
        t.identifier,
        t.sequence,
        t.data if payload is None else payload,
        reply=True,
        hop_limit=hop_limit,
    )
