# UDP header view (RFC 768), read and written in place inside its IP packet.
#
# Invariants: parse() needs a complete, unfragmented upper layer; 8 <= Length <= the IP
# payload (bytes after Length are ignored, as Linux does). Over IPv4 a zero checksum means
# "none" (RFC 768); over IPv6 it is invalid (RFC 8200 §8.1). A computed zero is sent as
# 0xFFFF (RFC 768). Setters keep the checksum valid (RFC 1624) and leave an absent one absent.
from __future__ import annotations

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet.checksum import adjust16, finish, sum_words, verifies
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.reasons import Reason
from proxy64.packet.view import require_writable

LAYER = "udp"
HEADER = 8


class UdpDatagram:
    """A view over the UDP header and data of one IP packet (see parse())."""

    __slots__ = ("_mv", "ip")

    def __init__(self, ip: IPv4Packet | IPv6Packet, mv: memoryview) -> None:
        self.ip = ip
        self._mv = mv

    @classmethod
    def parse(cls, ip: IPv4Packet | IPv6Packet, *, verify_checksum: bool = True) -> UdpDatagram:
        base = ip.upper_offset
        if ip.is_fragment:
            raise PacketError(LAYER, Reason.FRAGMENT, base)
        mv = ip.buffer[base:]
        n = len(mv)
        if n < HEADER:
            raise PacketError(LAYER, Reason.TRUNCATED, base + n)
        length = mv[4] << 8 | mv[5]
        if length < HEADER or length > n:
            raise PacketError(LAYER, Reason.BAD_UDP_LENGTH, base + 4)
        if length < n:
            mv = mv[:length]
        udp = cls(ip, mv)
        if verify_checksum:
            if ip.version == 6 and udp.checksum == 0:
                raise PacketError(LAYER, Reason.ZERO_UDP_CHECKSUM_V6, base + 6)
            if not udp.checksum_ok():
                raise PacketError(LAYER, Reason.BAD_CHECKSUM, base + 6)
        return udp

    def __repr__(self) -> str:
        return f"UdpDatagram({self.src_port} > {self.dst_port} len={self.length})"

    @property
    def buffer(self) -> memoryview:
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
    def length(self) -> int:
        return self._mv[4] << 8 | self._mv[5]

    @property
    def checksum(self) -> int:
        return self._mv[6] << 8 | self._mv[7]

    @checksum.setter
    def checksum(self, value: int) -> None:
        """Raw write, no recomputation (update_checksum() recomputes)."""
        require_writable(self._mv, LAYER)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"udp: checksum {value} outside 0..65535")
        self._mv[6] = value >> 8
        self._mv[7] = value & 0xFF

    @property
    def payload(self) -> memoryview:
        return self._mv[HEADER:]

    def compute_checksum(self) -> int:
        total = self.ip.pseudo_header_sum(len(self._mv)) + sum_words(self._mv)
        return finish(total + 0xFFFF - self.checksum) or 0xFFFF  # RFC 768: 0 is sent as ~0

    def checksum_ok(self) -> bool:
        """True when the checksum verifies, or is absent (zero) over IPv4 (RFC 768)."""
        if self.checksum == 0:
            return self.ip.version == 4
        return verifies(self._mv, self.ip.pseudo_header_sum(len(self._mv)))

    def update_checksum(self) -> None:
        self.checksum = self.compute_checksum()

    def _set_word(self, at: int, value: int) -> None:
        mv = self._mv
        require_writable(mv, LAYER)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"udp: value {value} does not fit 16 bits at byte {at}")
        old = mv[at] << 8 | mv[at + 1]
        mv[at] = value >> 8
        mv[at + 1] = value & 0xFF
        ck = mv[6] << 8 | mv[7]
        if ck == 0 and self.ip.version == 4:
            return  # no checksum to keep (RFC 768)
        ck = adjust16(ck, old, value) or 0xFFFF
        mv[6] = ck >> 8
        mv[7] = ck & 0xFF
