# IPv4 header view (RFC 791 §3.1), read and written in place.
#
# Invariants: parse() copies nothing and checks everything an index could trip on (so no
# property raises IndexError later): version 4, IHL >= 5, IHL <= total length <= buffer,
# well-formed options, and by default the header checksum. Bytes after Total Length (link
# padding) are outside the view. Every setter keeps the header checksum, and for address
# setters the TCP/UDP checksum, valid by RFC 1624 incremental update.
from __future__ import annotations

import enum
from ipaddress import IPv4Address

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet.checksum import adjust16, finish, sum_words, verifies
from proxy64.packet.fixup import adjust_upper_checksum
from proxy64.packet.reasons import Reason
from proxy64.packet.view import Absent, Buffer, as_view, require_writable

LAYER = "ipv4"
MIN_HEADER = 20  # RFC 791 §3.1: IHL minimum 5 words


class Ipv4Flags(enum.IntFlag):
    """RFC 791 §3.1 flags (the top 3 bits of byte 6, shifted down)."""

    MF = 1  # more fragments
    DF = 2  # don't fragment
    RESERVED = 4  # must be zero (RFC 791); RFC 3514's evil bit is not honoured


_FLAGS = tuple(Ipv4Flags(i) for i in range(8))


def _check_options(mv: memoryview, end: int) -> None:
    # RFC 791 §3.1: option 0 ends the list, 1 is one byte, others are type-length-value
    # with length >= 2 counting the type and length bytes.
    i = MIN_HEADER
    while i < end:
        kind = mv[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or mv[i + 1] < 2 or i + mv[i + 1] > end:
            raise PacketError(LAYER, Reason.BAD_IPV4_OPTION, i)
        i += mv[i + 1]


class IPv4Packet:
    """A view over one IPv4 datagram. Create with IPv4Packet.parse() or parse_ip()."""

    # Read-only attributes (slots, set at parse for speed): buffer, header_length,
    # upper_offset, total_length, protocol, is_fragment.
    __slots__ = (
        "_mv",
        "buffer",
        "header_length",
        "is_fragment",
        "protocol",
        "total_length",
        "upper_offset",
    )

    version = 4

    def __init__(self, mv: memoryview, header_length: int, total_length: int) -> None:
        self._mv = self.buffer = mv
        self.header_length = self.upper_offset = header_length
        self.total_length = total_length
        self.protocol = mv[9]  # the upper-layer protocol (RFC 791 §3.1)
        # Any fragment (MF set or offset non-zero) needs reassembly (RFC 791 §3.2).
        self.is_fragment = bool(mv[6] & 0x3F or mv[7])

    @classmethod
    def parse(cls, data: Buffer, *, verify_checksum: bool = True) -> IPv4Packet:
        """Check and wrap data; raises PacketError (layer "ipv4") on anything malformed."""
        return cls.parse_view(as_view(data), verify_checksum)

    @classmethod
    def parse_view(cls, mv: memoryview, verify_checksum: bool = True) -> IPv4Packet:
        """parse() for a 1-D unsigned-byte memoryview (as parse_ip has already made)."""
        n = len(mv)
        if n < MIN_HEADER:
            raise PacketError(LAYER, Reason.TRUNCATED, n)
        b0 = mv[0]
        if b0 >> 4 != 4:
            raise PacketError(LAYER, Reason.WRONG_VERSION, 0)
        hl = (b0 & 0x0F) << 2
        if hl < MIN_HEADER:
            raise PacketError(LAYER, Reason.BAD_HEADER_LENGTH, 0)
        total = mv[2] << 8 | mv[3]
        if total < hl:
            raise PacketError(LAYER, Reason.LENGTH_TOO_SMALL, 2)
        if total > n:
            raise PacketError(LAYER, Reason.LENGTH_EXCEEDS_BUFFER, 2)
        if total < n:
            mv = mv[:total]
        # The header is never all zero (version 4), so "sum ≡ 0 mod 0xFFFF" is "sums to -0".
        if verify_checksum and int.from_bytes(mv[:hl], "big") % 0xFFFF:
            raise PacketError(LAYER, Reason.BAD_HEADER_CHECKSUM, 10)
        if hl > MIN_HEADER:
            _check_options(mv, hl)
        return cls(mv, hl, total)

    # --- whole packet -------------------------------------------------------------------
    def __bytes__(self) -> bytes:
        return self._mv.tobytes()

    def __len__(self) -> int:
        return self.total_length

    def __repr__(self) -> str:
        return (
            f"IPv4Packet({self.src} > {self.dst} proto={self.protocol} len={self.total_length}"
            f"{' fragment' if self.is_fragment else ''})"
        )

    @property
    def payload(self) -> memoryview:
        """The upper-layer bytes (after the options)."""
        return self._mv[self.header_length :]

    @property
    def ihl(self) -> int:
        """Internet Header Length in 32-bit words (RFC 791 §3.1)."""
        return self.header_length >> 2

    @property
    def options(self) -> memoryview:
        """Raw option bytes (RFC 791 §3.1), empty without options; checked at parse."""
        return self._mv[MIN_HEADER : self.header_length]

    # --- byte 1: type of service / DS field ---------------------------------------------
    @property
    def tos(self) -> int:
        return self._mv[1]

    @tos.setter
    def tos(self, value: int) -> None:
        self._set_byte(1, value)

    @property
    def dscp(self) -> int:
        """Differentiated Services code point (RFC 2474 §3), top 6 bits of the TOS byte."""
        return self._mv[1] >> 2

    @dscp.setter
    def dscp(self, value: int) -> None:
        if not 0 <= value < 64:
            raise PacketValueError(f"ipv4: DSCP {value} outside 0..63")
        self._set_byte(1, value << 2 | (self._mv[1] & 3))

    @property
    def ecn(self) -> int:
        """ECN field (RFC 3168 §5), low 2 bits of the TOS byte."""
        return self._mv[1] & 3

    @ecn.setter
    def ecn(self, value: int) -> None:
        if not 0 <= value < 4:
            raise PacketValueError(f"ipv4: ECN {value} outside 0..3")
        self._set_byte(1, (self._mv[1] & 0xFC) | value)

    # --- bytes 4-7: identification, flags, fragment offset ------------------------------
    @property
    def identification(self) -> int:
        return self._mv[4] << 8 | self._mv[5]

    @identification.setter
    def identification(self, value: int) -> None:
        self._set_word(4, value)

    @property
    def flags(self) -> Ipv4Flags:
        return _FLAGS[self._mv[6] >> 5]

    @flags.setter
    def flags(self, value: Ipv4Flags | int) -> None:
        if not 0 <= value < 8:
            raise PacketValueError(f"ipv4: flags {value} outside 0..7")
        self._set_word(6, int(value) << 13 | (self.fragment_offset))
        self.is_fragment = bool(self._mv[6] & 0x3F or self._mv[7])

    @property
    def dont_fragment(self) -> bool:
        return bool(self._mv[6] & 0x40)

    @property
    def more_fragments(self) -> bool:
        return bool(self._mv[6] & 0x20)

    @property
    def fragment_offset(self) -> int:
        """Fragment offset in units of 8 octets (RFC 791 §3.1)."""
        return (self._mv[6] & 0x1F) << 8 | self._mv[7]

    # --- bytes 8-11: TTL, protocol, checksum --------------------------------------------
    @property
    def ttl(self) -> int:
        return self._mv[8]

    @ttl.setter
    def ttl(self, value: int) -> None:
        self._set_byte(8, value)

    hop_limit = ttl

    @property
    def checksum(self) -> int:
        return self._mv[10] << 8 | self._mv[11]

    @checksum.setter
    def checksum(self, value: int) -> None:
        """Raw write, no recomputation (use update_header_checksum() to recompute)."""
        require_writable(self._mv, LAYER)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"ipv4: checksum {value} outside 0..65535")
        self._mv[10] = value >> 8
        self._mv[11] = value & 0xFF

    def compute_header_checksum(self) -> int:
        """The correct header checksum for the current header (RFC 791 §3.1)."""
        return finish(sum_words(self._mv[: self.header_length]) + 0xFFFF - self.checksum)

    def header_checksum_ok(self) -> bool:
        return verifies(self._mv[: self.header_length])

    def update_header_checksum(self) -> None:
        self.checksum = self.compute_header_checksum()

    # --- bytes 12-19: addresses ----------------------------------------------------------
    @property
    def src_packed(self) -> bytes:
        return self._mv[12:16].tobytes()

    @property
    def dst_packed(self) -> bytes:
        return self._mv[16:20].tobytes()

    @property
    def src(self) -> IPv4Address:
        return IPv4Address(self._mv[12:16].tobytes())

    @src.setter
    def src(self, value: IPv4Address) -> None:
        self._set_address(12, value)

    @property
    def dst(self) -> IPv4Address:
        return IPv4Address(self._mv[16:20].tobytes())

    @dst.setter
    def dst(self, value: IPv4Address) -> None:
        self._set_address(16, value)

    def pseudo_header_sum(self, length: int | None = None) -> int:
        """RFC 9293 §3.1 / RFC 768 pseudo-header sum for the upper layer of this packet."""
        if length is None:
            length = self.total_length - self.header_length
        mv = self._mv
        return int.from_bytes(mv[12:20], "big") + mv[9] + length

    # --- fields IPv4 does not have --------------------------------------------------------
    flow_label = Absent("IPv4 has no flow label (RFC 791 §3.1); it is an IPv6 field")
    traffic_class = Absent("IPv4 calls it tos (or dscp/ecn), RFC 2474 §3")
    payload_length = Absent("IPv4 has total_length; use len(packet.payload)")
    next_header = Absent("IPv4 has protocol (RFC 791 §3.1)")
    extension_headers = Absent("IPv4 has options (RFC 791 §3.1), not extension headers")

    # --- writing -----------------------------------------------------------------------------
    def _set_word(self, at: int, value: int) -> None:
        # at is even: the word is aligned in the header, so RFC 1624 applies directly.
        mv = self._mv
        if mv.readonly:
            require_writable(mv, LAYER)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"ipv4: value {value} does not fit 16 bits at byte {at}")
        old = mv[at] << 8 | mv[at + 1]
        mv[at] = value >> 8
        mv[at + 1] = value & 0xFF
        ck = adjust16(mv[10] << 8 | mv[11], old, value)
        mv[10] = ck >> 8
        mv[11] = ck & 0xFF

    def _set_byte(self, at: int, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise PacketValueError(f"ipv4: value {value} does not fit 8 bits at byte {at}")
        mv = self._mv
        base = at & ~1
        word = mv[base] << 8 | mv[base + 1]
        word = (word & 0x00FF) | value << 8 if at == base else (word & 0xFF00) | value
        self._set_word(base, word)

    def _set_address(self, at: int, value: IPv4Address) -> None:
        mv = self._mv
        if mv.readonly:
            require_writable(mv, LAYER)
        if not isinstance(value, IPv4Address):
            raise PacketValueError(f"ipv4: {value!r} is not an IPv4Address")
        new = int(value)
        # Both words of the address as one one's complement value (2**16 ≡ 1 mod 0xFFFF).
        old16 = int.from_bytes(mv[at : at + 4], "big") % 0xFFFF
        new16 = new % 0xFFFF
        mv[at : at + 4] = new.to_bytes(4, "big")
        ck = adjust16(mv[10] << 8 | mv[11], old16, new16)
        mv[10] = ck >> 8
        mv[11] = ck & 0xFF
        if not ((mv[6] & 0x1F) or mv[7]):  # the upper header is here: first fragment or whole
            adjust_upper_checksum(mv, self.header_length, mv[9], 4, old_sum=old16, new_sum=new16)
