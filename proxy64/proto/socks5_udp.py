"""The SOCKS5 UDP request header (RFC 1928 §7): parse a client datagram, build a reply.

    +----+------+------+----------+----------+----------+
    |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
    | 2  |  1   |  1   | Variable |    2     | Variable |
    +----+------+------+----------+----------+----------+

A whole datagram is one message, so there is no buffering: parse_udp_datagram() returns
the destination and payload, returns UdpDropped for a fragment (FRAG != 0: §7 lets a server
that does not reassemble drop them, and proxy64 does not), or raises RemoteProtocolError
for a malformed header. The address codec is socks_address.py (§5).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy64.destination import Destination
from proxy64.errors import RemoteProtocolError
from proxy64.proto.socks_address import encode_address, parse_address

HEADER_FIXED = 3  # RSV(2) FRAG(1) before ATYP


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    destination: Destination
    payload: bytes


@dataclass(frozen=True, slots=True)
class UdpDropped:
    """A well-formed datagram proxy64 declines to forward, and why (counted, not answered)."""

    reason: str


def parse_udp_datagram(data: bytes) -> UdpDatagram | UdpDropped:
    if len(data) < HEADER_FIXED + 1:
        raise RemoteProtocolError(
            f"SOCKS5 UDP datagram of {len(data)} bytes is shorter than its header (RFC 1928 §7)"
        )
    if data[0] != 0 or data[1] != 0:
        raise RemoteProtocolError(
            f"SOCKS5 UDP header RSV must be 0x0000, got 0x{data[0]:02x}{data[1]:02x}"
        )
    parsed = parse_address(data, HEADER_FIXED, where="UDP header")
    if parsed is None:
        raise RemoteProtocolError("SOCKS5 UDP datagram ends inside its destination address")
    destination, end = parsed
    if data[2] != 0:
        return UdpDropped(f"fragment {data[2]:#04x}: proxy64 does not reassemble (RFC 1928 §7)")
    if destination.port == 0:
        return UdpDropped(f"destination port 0 ({destination})")
    return UdpDatagram(destination, bytes(data[end:]))


def build_udp_datagram(source: Destination, payload: bytes) -> bytes:
    """A reply to the client: the header names the source as the client addressed it."""
    return b"\x00\x00\x00" + encode_address(source.host, source.port) + payload
