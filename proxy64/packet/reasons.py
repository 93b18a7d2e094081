# Why a packet was refused: the fixed set of PacketError reasons.
#
# Each reason is a str (a StrEnum member), so PacketError.reason reads as a sentence in a
# log line and also works as a key for drop counters (STYLE: every drop reason is counted).
# The byte offset in PacketError says where in the packet the problem was found.
from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    TRUNCATED = "truncated: the packet ends inside a header"
    BAD_VERSION = "not an IP packet: the version field is neither 4 nor 6"
    WRONG_VERSION = "the version field does not match the parser used"
    BAD_HEADER_LENGTH = "header length field smaller than the fixed header (RFC 791 §3.1)"
    LENGTH_EXCEEDS_BUFFER = "the length field says more bytes than the packet has"
    LENGTH_TOO_SMALL = "the length field is smaller than the header"
    BAD_IPV4_OPTION = "malformed IPv4 option (RFC 791 §3.1)"
    BAD_HEADER_CHECKSUM = "IPv4 header checksum mismatch (RFC 791 §3.1, RFC 1122 §3.2.1.2)"
    FRAGMENT = "IP fragment: the upper-layer header is not complete in this packet"
    JUMBOGRAM = "IPv6 jumbogram (payload length 0, RFC 2675) is not supported"
    HOP_BY_HOP_NOT_FIRST = "hop-by-hop options header not first (RFC 8200 §4.1)"
    BAD_EXTENSION_HEADER = "extension header runs past the payload (RFC 8200 §4)"
    UNSUPPORTED_PROTOCOL = "upper-layer protocol not handled (only TCP, UDP, ICMP, ICMPv6)"
    BAD_DATA_OFFSET = "TCP data offset below 5 words or past the segment (RFC 9293 §3.1)"
    BAD_TCP_OPTION = "malformed TCP option: bad length (RFC 9293 §3.2)"
    BAD_UDP_LENGTH = "UDP length below 8 or past the IP payload (RFC 768)"
    BAD_CHECKSUM = "upper-layer checksum mismatch"
    ZERO_UDP_CHECKSUM_V6 = "UDP over IPv6 with a zero checksum (RFC 8200 §8.1)"
    NOT_ERROR_QUOTABLE = (
        "no ICMP error may be sent about this packet (RFC 1122 §3.2.2, RFC 4443 §2.4(e))"
    )
