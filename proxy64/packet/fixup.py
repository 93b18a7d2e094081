# Keeping checksums right when a field is rewritten in place (NAT-style, RFC 1624).
#
# An address is part of the TCP/UDP/ICMPv6 pseudo-header, so rewriting it must also fix
# the upper-layer checksum; this module does that for the IP views. Invariant: a checksum
# that was correct before a setter stays correct after it; one that was wrong stays wrong
# by the same amount (the RFC 1624 property), it is never silently "repaired".
from __future__ import annotations

from proxy64.packet.checksum import adjust16

PROTO_TCP = 6  # RFC 9293
PROTO_UDP = 17  # RFC 768
PROTO_ICMP = 1  # RFC 792
PROTO_ICMPV6 = 58  # RFC 4443

# Where the checksum field sits in each upper-layer header covered by a pseudo-header.
_CHECKSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMPV6: 2}


def adjust_upper_checksum(
    mv: memoryview, upper: int, protocol: int, version: int, *, old_sum: int, new_sum: int
) -> None:
    """After a pseudo-header field changed from old_sum to new_sum (one's complement
    values, 0..0xFFFE: reduce a wider field modulo 0xFFFF), fix the upper-layer checksum of
    the header starting at byte `upper` (first fragment or whole packet only)."""
    at = _CHECKSUM_AT.get(protocol)
    if at is None or (protocol == PROTO_ICMPV6 and version != 6):
        return
    at += upper
    if at + 2 > len(mv):
        return
    old = mv[at] << 8 | mv[at + 1]
    if protocol == PROTO_UDP and old == 0 and version == 4:
        return  # RFC 768: zero means "no checksum" over IPv4; keep it absent
    new = adjust16(old, old_sum, new_sum)
    if protocol == PROTO_UDP and new == 0:
        new = 0xFFFF  # RFC 768 / RFC 8200 §8.1: a computed zero is sent as all ones
    mv[at] = new >> 8
    mv[at + 1] = new & 0xFF
