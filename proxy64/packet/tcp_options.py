# TCP options: parse to a typed value and encode back (RFC 9293 §3.1-3.2, RFC 7323
# window scale and timestamps, RFC 2018 SACK).
#
# Invariants: parse accepts exactly the RFC 9293 §3.2 grammar (End of List, NOP, and
# kind-length-value with length >= 2 inside the option area) and raises PacketError
# otherwise; known kinds with a wrong length are errors too (RFC 9293 §3.2 MUST-7 says a
# bad length must not crash the stack: we refuse the segment). Unknown kinds are kept.
from __future__ import annotations

import struct
from dataclasses import dataclass

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet.reasons import Reason

EOL = 0
NOP = 1
MSS = 2  # RFC 9293 §3.2, length 4
WINDOW_SCALE = 3  # RFC 7323 §2.2, length 3
SACK_PERMITTED = 4  # RFC 2018 §2, length 2
SACK = 5  # RFC 2018 §3, length 2 + 8n
TIMESTAMPS = 8  # RFC 7323 §3.2, length 10
MAX_OPTIONS = 40  # data offset 15 words minus the 20-byte fixed header

_FIXED_LENGTH = {MSS: 4, WINDOW_SCALE: 3, SACK_PERMITTED: 2, TIMESTAMPS: 10}


@dataclass(frozen=True, slots=True)
class TcpOptions:
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None  # (TSval, TSecr)
    sack_blocks: tuple[tuple[int, int], ...] = ()  # (left edge, right edge)
    unknown: tuple[tuple[int, bytes], ...] = ()  # (kind, value bytes) in wire order


NO_OPTIONS = TcpOptions()


def parse_tcp_options(area: memoryview, base: int = 0) -> TcpOptions:
    """Parse the option area of a TCP header; base is its offset for error reports."""
    if not area:
        return NO_OPTIONS
    mss = ws = ts = None
    sack_ok = False
    blocks: list[tuple[int, int]] = []
    unknown: list[tuple[int, bytes]] = []
    i = 0
    end = len(area)
    while i < end:
        kind = area[i]
        if kind == EOL:
            break
        if kind == NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise PacketError("tcp", Reason.BAD_TCP_OPTION, base + i)
        length = area[i + 1]
        if length < 2 or i + length > end:
            raise PacketError("tcp", Reason.BAD_TCP_OPTION, base + i)
        want = _FIXED_LENGTH.get(kind)
        if want is not None and length != want:
            raise PacketError("tcp", Reason.BAD_TCP_OPTION, base + i)
        if kind == MSS:
            mss = area[i + 2] << 8 | area[i + 3]
        elif kind == WINDOW_SCALE:
            ws = area[i + 2]
        elif kind == SACK_PERMITTED:
            sack_ok = True
        elif kind == TIMESTAMPS:
            ts = (
                int.from_bytes(area[i + 2 : i + 6], "big"),
                int.from_bytes(area[i + 6 : i + 10], "big"),
            )
        elif kind == SACK:
            if (length - 2) % 8:
                raise PacketError("tcp", Reason.BAD_TCP_OPTION, base + i)
            for j in range(i + 2, i + length, 8):
                blocks.append(
                    (
                        int.from_bytes(area[j : j + 4], "big"),
                        int.from_bytes(area[j + 4 : j + 8], "big"),
                    )
                )
        else:
            unknown.append((kind, area[i + 2 : i + length].tobytes()))
        i += length
    return TcpOptions(mss, ws, sack_ok, ts, tuple(blocks), tuple(unknown))


def encode_tcp_options(options: TcpOptions) -> bytes:
    """Wire form, padded with End of List to a multiple of 4 (RFC 9293 §3.1 "Padding").

    Layout as Linux sends it: MSS, SACK-permitted + timestamps, NOP + window scale, then
    SACK blocks and unknown options. Raises PacketValueError when it exceeds 40 bytes or a
    value does not fit its field.
    """
    parts: list[bytes] = []
    try:
        if options.mss is not None:
            parts.append(struct.pack("!BBH", MSS, 4, options.mss))
        if options.timestamps is not None:
            head = struct.pack("!BB", SACK_PERMITTED, 2) if options.sack_permitted else b"\1\1"
            parts.append(head + struct.pack("!BBII", TIMESTAMPS, 10, *options.timestamps))
        elif options.sack_permitted:
            parts.append(struct.pack("!BB", SACK_PERMITTED, 2))
        if options.window_scale is not None:
            parts.append(struct.pack("!BBBB", NOP, WINDOW_SCALE, 3, options.window_scale))
        if options.sack_blocks:
            n = len(options.sack_blocks)
            flat = [edge for block in options.sack_blocks for edge in block]
            parts.append(struct.pack(f"!BBBB{2 * n}I", NOP, NOP, SACK, 2 + 8 * n, *flat))
        for kind, value in options.unknown:
            parts.append(struct.pack("!BB", kind, 2 + len(value)) + value)
    except struct.error as exc:
        raise PacketValueError(f"tcp: option value out of range: {exc}") from None
    raw = b"".join(parts)
    raw += b"\0" * (-len(raw) % 4)
    if len(raw) > MAX_OPTIONS:
        raise PacketValueError(f"tcp: options take {len(raw)} bytes, at most 40 fit")
    return raw
