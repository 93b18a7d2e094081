# ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) message views.
#
# Invariants: parse() needs a complete, unfragmented upper layer of at least 4 bytes, and
# 8 for the types whose header is 8 bytes (echo, errors). ICMPv4's checksum covers the
# message only (RFC 792); ICMPv6's also the pseudo-header (RFC 4443 §2.3). A field the
# message type does not carry (an echo's MTU, an error's sequence) raises PacketFieldError.
from __future__ import annotations

import enum

from proxy64.errors import PacketError, PacketFieldError, PacketValueError
from proxy64.packet.checksum import adjust16, finish, sum_words, verifies
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.reasons import Reason
from proxy64.packet.view import require_writable

HEADER = 8


class Icmpv4Type(enum.IntEnum):
    """RFC 792 message types proxy64 reads and writes."""

    ECHO_REPLY = 0
    DESTINATION_UNREACHABLE = 3
    SOURCE_QUENCH = 4
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


class Icmpv6Type(enum.IntEnum):
    """RFC 4443 §2.1 message types (errors are 0-127, informational 128-255)."""

    DESTINATION_UNREACHABLE = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAMETER_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129


# Types whose header is 8 bytes (RFC 792 formats; RFC 4443 §3-4).
_V4_EIGHT = frozenset((0, 3, 4, 5, 8, 11, 12, 13, 14, 15, 16))
_V4_ERRORS = frozenset((3, 4, 5, 11, 12))  # RFC 1122 §3.2.2
_V4_ECHO = frozenset((0, 8))
_V6_EIGHT = frozenset((1, 2, 3, 4, 128, 129))
_V6_ECHO = frozenset((128, 129))


class _IcmpMessage:
    __slots__ = ("_mv", "ip")

    _layer = "icmp"
    _eight: frozenset[int] = frozenset()
    _echo: frozenset[int] = frozenset()

    def __init__(self, ip: IPv4Packet | IPv6Packet, mv: memoryview) -> None:
        self.ip = ip
        self._mv = mv

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self.type} code={self.code} len={len(self._mv)})"

    @property
    def buffer(self) -> memoryview:
        return self._mv

    @property
    def type(self) -> int:
        return self._mv[0]

    @property
    def code(self) -> int:
        return self._mv[1]

    @property
    def checksum(self) -> int:
        return self._mv[2] << 8 | self._mv[3]

    @checksum.setter
    def checksum(self, value: int) -> None:
        """Raw write, no recomputation (update_checksum() recomputes)."""
        require_writable(self._mv, self._layer)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"{self._layer}: checksum {value} outside 0..65535")
        self._mv[2] = value >> 8
        self._mv[3] = value & 0xFF

    @property
    def rest_of_header(self) -> memoryview:
        """Bytes 4-7, whose meaning depends on the type (empty for a 4-byte message)."""
        return self._mv[4:8]

    @property
    def body(self) -> memoryview:
        """Everything after the 8-byte header: echo data, or the quoted packet."""
        return self._mv[HEADER:]

    @property
    def is_echo(self) -> bool:
        return self._mv[0] in self._echo

    @property
    def is_error(self) -> bool:
        raise NotImplementedError

    @property
    def identifier(self) -> int:
        self._need_echo("identifier")
        return self._mv[4] << 8 | self._mv[5]

    @identifier.setter
    def identifier(self, value: int) -> None:
        self._need_echo("identifier")
        self._set_word(4, value)

    @property
    def sequence(self) -> int:
        self._need_echo("sequence")
        return self._mv[6] << 8 | self._mv[7]

    @sequence.setter
    def sequence(self, value: int) -> None:
        self._need_echo("sequence")
        self._set_word(6, value)

    @property
    def data(self) -> memoryview:
        """Echo data (RFC 792 / RFC 4443 §4.1)."""
        self._need_echo("data")
        return self._mv[HEADER:]

    @property
    def quoted(self) -> memoryview:
        """The invoking packet quoted by an error message (as much as fits)."""
        if not self.is_error:
            raise PacketFieldError(f"{self._layer}: type {self.type} is not an error message")
        return self._mv[HEADER:]

    def _pseudo(self) -> int:
        return 0

    def compute_checksum(self) -> int:
        return finish(self._pseudo() + sum_words(self._mv) + 0xFFFF - self.checksum)

    def checksum_ok(self) -> bool:
        return verifies(self._mv, self._pseudo())

    def update_checksum(self) -> None:
        self.checksum = self.compute_checksum()

    def _need_echo(self, name: str) -> None:
        if self._mv[0] not in self._echo:
            raise PacketFieldError(
                f"{self._layer}: no field {name!r} in type {self.type} (echo messages only)"
            )

    def _set_word(self, at: int, value: int) -> None:
        mv = self._mv
        require_writable(mv, self._layer)
        if not 0 <= value <= 0xFFFF:
            raise PacketValueError(f"{self._layer}: value {value} does not fit 16 bits")
        old = mv[at] << 8 | mv[at + 1]
        mv[at] = value >> 8
        mv[at + 1] = value & 0xFF
        ck = adjust16(mv[2] << 8 | mv[3], old, value)
        if ck == 0 and not any(mv[:2]) and not any(mv[4:]):
            # RFC 1624 §3: eqn. 3 yields -0 only for all-zero data, whose checksum is
            # 0xFFFF. ICMPv4 has no pseudo-header, so an echo reply with id, sequence and
            # data all zero is exactly that case.
            ck = 0xFFFF
        mv[2] = ck >> 8
        mv[3] = ck & 0xFF

    @classmethod
    def _check(cls, ip: IPv4Packet | IPv6Packet) -> memoryview:
        base = ip.upper_offset
        if ip.is_fragment:
            raise PacketError(cls._layer, Reason.FRAGMENT, base)
        mv = ip.buffer[base:]
        n = len(mv)
        if n < 4 or (n < HEADER and mv[0] in cls._eight):
            raise PacketError(cls._layer, Reason.TRUNCATED, base + n)
        return mv


class Icmpv4Message(_IcmpMessage):
    """A view over one ICMPv4 message (RFC 792)."""

    __slots__ = ()
    _layer = "icmpv4"
    _eight = _V4_EIGHT
    _echo = _V4_ECHO

    @classmethod
    def parse(cls, ip: IPv4Packet | IPv6Packet, *, verify_checksum: bool = True) -> Icmpv4Message:
        msg = cls(ip, cls._check(ip))
        if verify_checksum and not msg.checksum_ok():
            raise PacketError(cls._layer, Reason.BAD_CHECKSUM, ip.upper_offset + 2)
        return msg

    @property
    def is_error(self) -> bool:
        return self._mv[0] in _V4_ERRORS

    @property
    def mtu(self) -> int:
        """Next-hop MTU of "fragmentation needed" (type 3 code 4, RFC 1191 §4)."""
        if self._mv[0] != Icmpv4Type.DESTINATION_UNREACHABLE or self._mv[1] != 4:
            raise PacketFieldError("icmpv4: only type 3 code 4 carries an MTU (RFC 1191)")
        return self._mv[6] << 8 | self._mv[7]

    @property
    def pointer(self) -> int:
        """Octet pointer of a parameter problem (type 12, RFC 792)."""
        if self._mv[0] != Icmpv4Type.PARAMETER_PROBLEM:
            raise PacketFieldError("icmpv4: only a parameter problem carries a pointer")
        return self._mv[4]


class Icmpv6Message(_IcmpMessage):
    """A view over one ICMPv6 message (RFC 4443)."""

    __slots__ = ()
    _layer = "icmpv6"
    _eight = _V6_EIGHT
    _echo = _V6_ECHO

    @classmethod
    def parse(cls, ip: IPv4Packet | IPv6Packet, *, verify_checksum: bool = True) -> Icmpv6Message:
        msg = cls(ip, cls._check(ip))
        if verify_checksum and not msg.checksum_ok():
            raise PacketError(cls._layer, Reason.BAD_CHECKSUM, ip.upper_offset + 2)
        return msg

    def _pseudo(self) -> int:
        return self.ip.pseudo_header_sum(len(self._mv))  # RFC 4443 §2.3

    @property
    def is_error(self) -> bool:
        return self._mv[0] < 128  # RFC 4443 §2.1

    @property
    def mtu(self) -> int:
        """MTU of a Packet Too Big message (RFC 4443 §3.2)."""
        if self._mv[0] != Icmpv6Type.PACKET_TOO_BIG:
            raise PacketFieldError("icmpv6: only Packet Too Big (type 2) carries an MTU")
        return int.from_bytes(self._mv[4:8], "big")

    @property
    def pointer(self) -> int:
        """Octet pointer of a parameter problem (RFC 4443 §3.4)."""
        if self._mv[0] != Icmpv6Type.PARAMETER_PROBLEM:
            raise PacketFieldError("icmpv6: only a parameter problem carries a pointer")
        return int.from_bytes(self._mv[4:8], "big")
