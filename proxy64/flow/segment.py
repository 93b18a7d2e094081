"""The TCP segment as the flow machine sees it: header fields that matter, no addresses.

The TUN stack maps the packet codec's parsed segment to this and back, so the machine
is testable with plain values. Sequence arithmetic is modulo 2**32 (RFC 9293 §3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

SEQ_MASK = 0xFFFFFFFF
_HALF = 0x80000000


def seq_add(a: int, n: int) -> int:
    return (a + n) & SEQ_MASK


def seq_lt(a: int, b: int) -> bool:
    """a precedes b in sequence space (RFC 9293 §3.4, modulo 2**32)."""
    return a != b and ((b - a) & SEQ_MASK) < _HALF


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


def seq_diff(a: int, b: int) -> int:
    """a - b for a at or after b."""
    return (a - b) & SEQ_MASK


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    ack: int
    flags: int
    window: int  # the raw 16-bit header field, before window scaling
    # bytes, or a read-only view into the packet it arrived in (kept without a copy)
    payload: bytes | memoryview = b""
    mss: int | None = None  # RFC 9293 §3.7.1 option, SYN only
    wscale: int | None = None  # RFC 7323 §2 window scale shift, SYN only

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def length(self) -> int:
        """Sequence space used: payload plus one for SYN and for FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (1 if self.syn else 0) + (1 if self.fin else 0)

    def describe(self) -> str:
        names = "".join(
            n
            for bit, n in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."))
            if self.flags & bit
        )
        return f"[{names}] seq={self.seq} ack={self.ack} win={self.window} len={len(self.payload)}"
