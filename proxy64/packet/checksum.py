# The Internet checksum (RFC 1071), the pseudo-headers of each family and the RFC 1624
# incremental update.
#
# Invariants: a "sum" here is a non-negative int whose value modulo 0xFFFF is the one's
# complement sum of the big-endian 16-bit words of the data (odd data padded with a zero
# byte, RFC 1071 §1). Sums are added as plain ints and folded once, at the end.
#
# Speed: 2**16 ≡ 1 (mod 0xFFFF), so the whole buffer read as one integer is congruent to
# the sum of its words; int.from_bytes and one modulo run in C. Read little-endian, the
# integer is congruent to 256**-1 times the big-endian sum, whatever the length parity
# (RFC 1071 §2(B), byte-order independence), which is faster and needs no padding.
from __future__ import annotations

import math
from ipaddress import IPv4Address, IPv6Address

# Above this many bytes, the buffer is read as several integers that are added before the
# one modulo: a bigint modulo costs a division per 30-bit digit, an addition does not, and
# each chunk costs a call. Chunks of about 10·sqrt(n) bytes balance the two. Chunks start
# at even offsets, so each is congruent to its own words' sum. Up to _CHUNK_ABOVE bytes one
# integer is faster (`bench/bench_packet.py` times `checksum` at 1500 B and 64 KiB).
_CHUNK_ABOVE = 4096


def _le_int(data: bytes | bytearray | memoryview) -> int:
    """An int congruent to the little-endian word sum of data, zero only for zero data."""
    n = len(data)
    if n <= _CHUNK_ABOVE:
        return int.from_bytes(data, "little")
    mv = data if isinstance(data, memoryview) else memoryview(data)
    step = (10 * math.isqrt(n) + 1) & ~1
    from_bytes = int.from_bytes
    return sum([from_bytes(mv[i : i + step], "little") for i in range(0, n, step)])


def sum_words(data: bytes | bytearray | memoryview) -> int:
    """A sum (see module comment) of the 16-bit big-endian words of data."""
    x = _le_int(data)
    # Reduce now to keep later additions small; keep "non-zero" visible for fold().
    r = x % 0xFFFF
    if r == 0 and x != 0:
        r = 0xFFFF
    return r << 8


def fold(total: int) -> int:
    """Fold a sum to its 16-bit one's complement value (0xFFFF for a non-zero multiple).

    RFC 1624 §3: an end-around-carry adder never yields +0 (0x0000) from non-zero input.
    """
    r = total % 0xFFFF
    if r == 0 and total != 0:
        return 0xFFFF
    return r


def finish(total: int) -> int:
    """The checksum field value for a sum: the one's complement of the folded sum."""
    return 0xFFFF - fold(total)


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 checksum of data (plus an initial sum, e.g. a pseudo-header sum).

    Over data that includes a correct checksum field, the result is 0.
    """
    return finish(sum_words(data) + initial)


def pseudo_header_sum_v4(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """RFC 9293 §3.1 / RFC 768 pseudo-header: src, dst, zero, protocol, upper-layer length."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + protocol + length


def pseudo_header_sum_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """RFC 8200 §8.1 pseudo-header: src, dst, 32-bit upper-layer length, zeros, next header."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + length + next_header


def pseudo_header_sum(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, protocol: int, length: int
) -> int:
    """The pseudo-header sum for either family (both addresses of the same family)."""
    return int(src) + int(dst) + protocol + length


def update_checksum(
    old_checksum: int, old_field: bytes | bytearray | memoryview, new_field: bytes | bytearray
) -> int:
    """RFC 1624 §3 eqn. 3: HC' = ~(~HC + ~m + m'), for a field m of even length that
    changed to m' (same length, same alignment within the checksummed data)."""
    total = (0xFFFF - old_checksum) + (0xFFFF - fold(sum_words(old_field))) + sum_words(new_field)
    return finish(total)


def verifies(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when data (checksum field included) plus the initial sum folds to 0xFFFF.

    One modulo, in the little-endian domain: initial << 8 is initial * 256**-1 there.
    """
    x = _le_int(data) + (initial << 8)
    return x != 0 and x % 0xFFFF == 0


def adjust16(checksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one 16-bit word old -> new, with end-around carries (no mod).

    With end-around carries the sum is 0 only when every addend is (checksum 0xFFFF, old
    0xFFFF, new 0); otherwise the +0/-0 choice matches a full recomputation over non-zero
    data (RFC 1624 §3), and this equals update_checksum_words().
    """
    s = (0xFFFF - checksum) + (0xFFFF - old) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF - s


def update_checksum_words(old_checksum: int, old_sum: int, new_sum: int) -> int:
    """RFC 1624 eqn. 3 with the field sums already known (e.g. int fields, addresses)."""
    return finish((0xFFFF - old_checksum) + (0xFFFF - fold(old_sum)) + new_sum)
