# TCP header view (RFC 9293 §3.1), read and written in place inside its IP packet.
#
# Invariants: parse() needs a complete, unfragmented upper layer; 20 <= data offset * 4 <=
# segment length; options are parsed on demand (PacketError if malformed). The checksum
# covers the family's pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1). Setters keep it valid
# by RFC 1624 incremental update.
from __future__ import annotations

import enum
import struct

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet.checksum import adjust16, finish, sum_words, update_checksum_words, verifies
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.reasons import Reason
from proxy64.packet.tcp_options import TcpOptions, parse_tcp_options
from proxy64.packet.view import require_writable

LAYER = "tcp"
MIN_HEADER = 20


class TcpFlags(enum.IntFlag):
    """RFC 9293 §3.1 control bits (byte 13), with RFC 3168 ECE/CWR."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


_FLAGS = tuple(TcpFlags(i) for i in range(256))
_U32 = struct.Struct("!I").unpack_from


class TcpSegment:
    """A view over the TCP header and data of one IP packet (see parse())."""

    __slots__ = ("_mv", "header_length", "ip")

    def __init__(self, ip: IPv4Packet | IPv6Packet, mv: memoryview, header_length: int) -> None:
        self.ip = ip
        self._mv = mv
        self.header_length = header_length

    @classmethod
    def parse(cls, ip: IPv4Packet | IPv6Packet, *, verify_checksum: bool = True) -> TcpSegment:
        base = ip.upper_offset
        if ip.is_fragment:
            raise PacketError(LAYER, Reason.FRAGMENT, base)
        mv = ip.buffer[base:]
        n = len(mv)
        if n < MIN_HEADER:
            raise PacketError(LAYER, Reason.TRUNCATED, base + n)
        hl = (mv[12] >> 4) << 2
        if hl < MIN_HEADER or hl > n:
            raise PacketError(LAYER, Reason.BAD_DATA_OFFSET, base + 12)
        seg = cls(ip, mv, hl)
        if verify_checksum and not seg.checksum_ok():
            raise PacketError(LAYER, Reason.BAD_CHECKSUM, base + 16)
        return seg

    def __repr__(self) -> str:
        return (
            f"TcpSegment({self.src_port} > {self.dst_port} {self.flags!r} seq={self.seq} "
            f"ack={self.ack} win={self.window} len={len(self._mv) - self.header_length})"
        )

    @property
    def buffer(self) -> memoryview:
        """Header and data: the bytes the checksum covers (with the pseudo-header)."""
        return self._mv

    @property
    def src_port(self) -> int:
        return self._mv[0] << 8 | self._mv[1]

    @src_port.setter
    def src_port(self, value: int) -> None:
        self._set_word(0, value)

    @property
    def dst_port(self) -> int:
        return self._mv[2] << 8 | self._mv[3]

    @dst_port.setter
    def dst_port(self, value: int) -> None:
        self._set_word(2, value)

    @property
    def seq(self) -> int:
        seq: int = _U32(self._mv, 4)[0]
        return seq

    @seq.setter
    def seq(self, value: int) -> None:
        self._set_long(4, value)

    @property
    def ack(self) -> int:
        ack: int = _U32(self._mv, 8)[0]
        return ack

    @ack.setter
    def ack(self, value: int) -> None:
        self._set_long(8, value)

    @property
    def data_offset(self) -> int:
        """Header length in 32-bit words (RFC 9293 §3.1)."""
        return self.header_length >> 2

    @property
    def reserved(self) -> int:
        """The 4 reserved bits (RFC 9293 §3.1; bit 0 is RFC 9768's AE)."""
        return self._mv[12] & 0x0F

    @property
    def flags(self) -> TcpFlags:
        return _FLAGS[self._mv[13]]

    @flags.setter
    def flags(self, value: TcpFlags | int) -> None:
        if not 0 <= value <= 0xFF:
            raise PacketValueError(f"tcp: flags {value} outside 0..255")
        self._set_word(12, (self._mv[12] << 8) | int(value))

    @property
    def window(self) -> int:
        return self._mv[14] << 8 | self._mv[15]

    @window.setter
    def window(self, value: int) -> None:
        self._set_word(14, value)

    @property
    def checksum(self) -> int:
        return self._mv[16] << 8 | self._mv[17]

    @checksum.setter
    def checksum(self, value: int) -> None:
        """Raw write, no recomputation (update_checksum() recomputes)."""
        require_writable(self._mv, LAYER)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"tcp: checksum {value} outside 0..65535")
        self._mv[16] = value >> 8
        self._mv[17] = value & 0xFF

    @property
    def urgent(self) -> int:
        return self._mv[18] << 8 | self._mv[19]

    @urgent.setter
    def urgent(self, value: int) -> None:
        self._set_word(18, value)

    @property
    def options_bytes(self) -> memoryview:
        return self._mv[MIN_HEADER : self.header_length]

    @property
    def options(self) -> TcpOptions:
        """Parsed options; raises PacketError for a malformed option area."""
        return parse_tcp_options(
            self._mv[MIN_HEADER : self.header_length], self.ip.upper_offset + MIN_HEADER
        )

    @property
    def payload(self) -> memoryview:
        return self._mv[self.header_length :]

    @property
    def sequence_length(self) -> int:
        """Sequence space the segment occupies: data + SYN + FIN (RFC 9293 §3.3)."""
        f = self._mv[13]
        return len(self._mv) - self.header_length + (f & 2) // 2 + (f & 1)

    # --- checksum -------------------------------------------------------------------------
    def compute_checksum(self) -> int:
        total = self.ip.pseudo_header_sum(len(self._mv)) + sum_words(self._mv)
        return finish(total + 0xFFFF - self.checksum)

    def checksum_ok(self) -> bool:
        return verifies(self._mv, self.ip.pseudo_header_sum(len(self._mv)))

    def update_checksum(self) -> None:
        self.checksum = self.compute_checksum()

    # --- writing ---------------------------------------------------------------------------
    def _adjust(self, old_sum: int, new_sum: int) -> None:
        mv = self._mv
        ck = update_checksum_words(mv[16] << 8 | mv[17], old_sum, new_sum)
        mv[16] = ck >> 8
        mv[17] = ck & 0xFF

    def _set_word(self, at: int, value: int) -> None:
        mv = self._mv
        if mv.readonly:
            require_writable(mv, LAYER)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"tcp: value {value} does not fit 16 bits at byte {at}")
        old = mv[at] << 8 | mv[at + 1]
        mv[at] = value >> 8
        mv[at + 1] = value & 0xFF
        ck = adjust16(mv[16] << 8 | mv[17], old, value)
        mv[16] = ck >> 8
        mv[17] = ck & 0xFF

    def _set_long(self, at: int, value: int) -> None:
        mv = self._mv
        require_writable(mv, LAYER)
        if not 0 <= value <= 0xFFFFFFFF:
            raise PacketValueError(f"tcp: value {value} does not fit 32 bits at byte {at}")
        old = int.from_bytes(mv[at : at + 4], "big")
        mv[at : at + 4] = value.to_bytes(4, "big")
        self._adjust(old, value)
