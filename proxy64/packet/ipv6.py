# IPv6 header view (RFC 8200 §3) with the extension header walk (RFC 8200 §4).
#
# Invariants: parse() copies nothing; version 6, 40 + Payload Length <= buffer (bytes after
# it are outside the view), every extension header fits the payload, hop-by-hop only
# first (§4.1). The walk stops at the first header that is not hop-by-hop (0), routing
# (43), fragment (44), destination options (60) or AH (51); that is `protocol`. A Fragment
# header with offset 0 and M=0 (an atomic fragment, RFC 6946) is not a fragment.
# Address setters keep the TCP/UDP/ICMPv6 checksum valid (pseudo-header, RFC 1624).
from __future__ import annotations

from ipaddress import IPv6Address
from typing import NamedTuple

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet.fixup import adjust_upper_checksum
from proxy64.packet.reasons import Reason
from proxy64.packet.view import Absent, Buffer, as_view, require_writable

LAYER = "ipv6"
HEADER = 40  # RFC 8200 §3: fixed header size

HOP_BY_HOP = 0
ROUTING = 43
FRAGMENT = 44
DESTINATION_OPTIONS = 60
AUTHENTICATION = 51  # RFC 4302 §2.2: length in 4-octet units minus 2
NO_NEXT_HEADER = 59  # RFC 8200 §4.7
_EXTENSIONS = frozenset((HOP_BY_HOP, ROUTING, FRAGMENT, DESTINATION_OPTIONS, AUTHENTICATION))


class ExtensionHeader(NamedTuple):
    """One extension header: its type (the Next Header value that named it), where it
    starts in the packet and how many bytes it spans."""

    kind: int
    offset: int
    length: int


def _final_destination(mv: memoryview, off: int, length: int, final: int) -> int:
    # RFC 8200 §8.1: with Segments Left > 0 the pseudo-header uses the final destination,
    # the last address of a type 0 (RFC 5095, deprecated) or type 2 (RFC 6275 §6.4)
    # header, Segment List[0] of a Segment Routing Header (type 4, RFC 8754 §2).
    kind = mv[off + 2]
    if kind in (0, 2):
        return off + length - 16
    if kind == 4:
        return off + 8
    return final


class IPv6Packet:
    """A view over one IPv6 packet. Create with IPv6Packet.parse() or parse_ip()."""

    # Read-only attributes (slots, set at parse for speed): buffer, protocol, upper_offset,
    # extension_headers, is_fragment.
    __slots__ = (
        "_final",
        "_frag",
        "_mv",
        "buffer",
        "extension_headers",
        "is_fragment",
        "protocol",
        "upper_offset",
    )

    version = 6

    def __init__(
        self,
        mv: memoryview,
        protocol: int,
        upper_offset: int,
        extension_headers: tuple[ExtensionHeader, ...] = (),
        *,
        frag: int = -1,
        final: int = 24,
    ) -> None:
        self._mv = self.buffer = mv
        self.is_fragment = frag >= 0
        self.protocol = protocol  # upper-layer protocol after the extension headers
        self.upper_offset = upper_offset  # where that upper-layer header starts
        self.extension_headers = extension_headers
        self._frag = frag  # offset of the Fragment header, or -1
        self._final = final  # offset of the final destination address (RFC 8200 §8.1)

    @classmethod
    def parse(cls, data: Buffer) -> IPv6Packet:
        """Check and wrap data; raises PacketError (layer "ipv6") on anything malformed."""
        return cls.parse_view(as_view(data))

    @classmethod
    def parse_view(cls, mv: memoryview) -> IPv6Packet:
        """parse() for a 1-D unsigned-byte memoryview (as parse_ip has already made)."""
        n = len(mv)
        if n < HEADER:
            raise PacketError(LAYER, Reason.TRUNCATED, n)
        if mv[0] >> 4 != 6:
            raise PacketError(LAYER, Reason.WRONG_VERSION, 0)
        plen = mv[4] << 8 | mv[5]
        nh = mv[6]
        if plen == 0 and nh == HOP_BY_HOP and n > HEADER:
            raise PacketError(LAYER, Reason.JUMBOGRAM, 4)
        end = HEADER + plen
        if end > n:
            raise PacketError(LAYER, Reason.LENGTH_EXCEEDS_BUFFER, 4)
        if end < n:
            mv = mv[:end]
        if nh not in _EXTENSIONS:
            return cls(mv, nh, HEADER)
        off = HEADER
        frag = -1
        final = 24
        exts: list[ExtensionHeader] = []
        while nh in _EXTENSIONS:
            if nh == HOP_BY_HOP and off != HEADER:
                raise PacketError(LAYER, Reason.HOP_BY_HOP_NOT_FIRST, off)
            if off + 8 > end:  # every extension header is at least 8 octets (§4)
                raise PacketError(LAYER, Reason.BAD_EXTENSION_HEADER, off)
            if nh == FRAGMENT:
                length = 8  # §4.5: fixed size
                if frag < 0 and (mv[off + 2] << 8 | mv[off + 3]) & 0xFFF9:
                    frag = off  # offset or M set: a real fragment, not RFC 6946 atomic
            elif nh == AUTHENTICATION:
                length = (mv[off + 1] + 2) << 2
            else:
                length = (mv[off + 1] + 1) << 3
            if off + length > end:
                raise PacketError(LAYER, Reason.BAD_EXTENSION_HEADER, off)
            if nh == ROUTING and mv[off + 3] and length >= 24:
                final = _final_destination(mv, off, length, final)
            exts.append(ExtensionHeader(nh, off, length))
            nh = mv[off]
            off += length
        return cls(mv, nh, off, tuple(exts), frag=frag, final=final)

    # --- whole packet -------------------------------------------------------------------
    def __bytes__(self) -> bytes:
        return self._mv.tobytes()

    def __len__(self) -> int:
        return len(self._mv)

    def __repr__(self) -> str:
        return (
            f"IPv6Packet({self.src} > {self.dst} proto={self.protocol} len={len(self._mv)}"
            f"{' fragment' if self.is_fragment else ''})"
        )

    @property
    def payload(self) -> memoryview:
        """The upper-layer bytes, after every extension header."""
        return self._mv[self.upper_offset :]

    @property
    def header_length(self) -> int:
        """Fixed header plus extension headers: where the upper layer starts."""
        return self.upper_offset

    @property
    def total_length(self) -> int:
        return len(self._mv)

    # --- bytes 0-3: version, traffic class, flow label --------------------------------------
    @property
    def traffic_class(self) -> int:
        mv = self._mv
        return (mv[0] & 0x0F) << 4 | mv[1] >> 4

    @traffic_class.setter
    def traffic_class(self, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise PacketValueError(f"ipv6: traffic class {value} outside 0..255")
        mv = self._mv
        require_writable(mv, LAYER)
        mv[0] = 0x60 | value >> 4
        mv[1] = (value & 0x0F) << 4 | (mv[1] & 0x0F)

    @property
    def dscp(self) -> int:
        return self.traffic_class >> 2

    @dscp.setter
    def dscp(self, value: int) -> None:
        if not 0 <= value < 64:
            raise PacketValueError(f"ipv6: DSCP {value} outside 0..63")
        self.traffic_class = value << 2 | self.ecn

    @property
    def ecn(self) -> int:
        return self.traffic_class & 3

    @ecn.setter
    def ecn(self, value: int) -> None:
        if not 0 <= value < 4:
            raise PacketValueError(f"ipv6: ECN {value} outside 0..3")
        self.traffic_class = (self.traffic_class & 0xFC) | value

    @property
    def flow_label(self) -> int:
        """RFC 6437 flow label (20 bits)."""
        mv = self._mv
        return (mv[1] & 0x0F) << 16 | mv[2] << 8 | mv[3]

    @flow_label.setter
    def flow_label(self, value: int) -> None:
        if not 0 <= value < 1 << 20:
            raise PacketValueError(f"ipv6: flow label {value} outside 20 bits")
        mv = self._mv
        require_writable(mv, LAYER)
        mv[1] = (mv[1] & 0xF0) | value >> 16
        mv[2] = (value >> 8) & 0xFF
        mv[3] = value & 0xFF

    # --- bytes 4-7 ---------------------------------------------------------------------------
    @property
    def payload_length(self) -> int:
        """The Payload Length field: extension headers plus upper layer (RFC 8200 §3)."""
        return self._mv[4] << 8 | self._mv[5]

    @property
    def next_header(self) -> int:
        """The Next Header field of the fixed header (see protocol for the upper layer)."""
        return self._mv[6]

    @property
    def hop_limit(self) -> int:
        return self._mv[7]

    @hop_limit.setter
    def hop_limit(self, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise PacketValueError(f"ipv6: hop limit {value} outside 0..255")
        require_writable(self._mv, LAYER)
        self._mv[7] = value  # no IPv6 header checksum (RFC 8200 §3)

    # --- fragments (RFC 8200 §4.5) ----------------------------------------------------------
    @property
    def fragment_offset(self) -> int:
        """Fragment offset in 8-octet units (0 when not a fragment)."""
        if self._frag < 0:
            return 0
        mv = self._mv
        return (mv[self._frag + 2] << 8 | mv[self._frag + 3]) >> 3

    @property
    def more_fragments(self) -> bool:
        return self._frag >= 0 and bool(self._mv[self._frag + 3] & 1)

    @property
    def fragment_identification(self) -> int:
        """The 32-bit Identification of the Fragment header (0 when not a fragment)."""
        if self._frag < 0:
            return 0
        return int.from_bytes(self._mv[self._frag + 4 : self._frag + 8], "big")

    # --- addresses ---------------------------------------------------------------------------
    @property
    def src_packed(self) -> bytes:
        return self._mv[8:24].tobytes()

    @property
    def dst_packed(self) -> bytes:
        return self._mv[24:40].tobytes()

    @property
    def src(self) -> IPv6Address:
        return IPv6Address(self._mv[8:24].tobytes())

    @src.setter
    def src(self, value: IPv6Address) -> None:
        self._set_address(8, value)

    @property
    def dst(self) -> IPv6Address:
        return IPv6Address(self._mv[24:40].tobytes())

    @dst.setter
    def dst(self, value: IPv6Address) -> None:
        self._set_address(24, value)

    @property
    def final_destination(self) -> IPv6Address:
        """The destination the upper layer's pseudo-header uses (RFC 8200 §8.1): the
        Destination Address, or the last address of a Routing header with segments left."""
        return IPv6Address(self._mv[self._final : self._final + 16].tobytes())

    def pseudo_header_sum(self, length: int | None = None) -> int:
        """RFC 8200 §8.1 pseudo-header sum for the upper layer of this packet."""
        if length is None:
            length = len(self._mv) - self.upper_offset
        mv = self._mv
        at = self._final
        return (
            int.from_bytes(mv[8:24], "big")
            + int.from_bytes(mv[at : at + 16], "big")
            + self.protocol
            + length
        )

    # --- fields IPv6 does not have -----------------------------------------------------------
    ihl = Absent("IPv6 has no header length field (RFC 8200 §3); see header_length")
    options = Absent("IPv6 has extension headers (RFC 8200 §4), not options")
    tos = Absent("IPv6 calls it traffic_class (RFC 8200 §7)")
    ttl = Absent("IPv6 calls it hop_limit (RFC 8200 §3)")
    identification = Absent(
        "IPv6 has no Identification in the fixed header; see fragment_identification"
    )
    flags = Absent("IPv6 has no flags field (RFC 8200 §3); see more_fragments")
    dont_fragment = Absent("IPv6 routers never fragment (RFC 8200 §5); there is no DF bit")
    checksum = Absent("IPv6 has no header checksum (RFC 8200 §3)")

    # --- writing -----------------------------------------------------------------------------
    def _set_address(self, at: int, value: IPv6Address) -> None:
        mv = self._mv
        if mv.readonly:
            require_writable(mv, LAYER)
        if not isinstance(value, IPv6Address):
            raise PacketValueError(f"ipv6: {value!r} is not an IPv6Address")
        new = int(value)
        old16 = int.from_bytes(mv[at : at + 16], "big") % 0xFFFF  # 8 words, one value
        mv[at : at + 16] = new.to_bytes(16, "big")
        if not self.fragment_offset and (at in (8, self._final)):
            adjust_upper_checksum(
                mv, self.upper_offset, self.protocol, 6, old_sum=old16, new_sum=new % 0xFFFF
            )
