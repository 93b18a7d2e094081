"""Internet checksum (RFC 1071) and incremental update (RFC 1624): known answers and a
word-by-word reference implementation as the oracle."""

from __future__ import annotations

import random
from ipaddress import ip_address

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy64.packet import (
    finish,
    fold,
    internet_checksum,
    pseudo_header_sum,
    sum_words,
    update_checksum,
    update_checksum_words,
)
from proxy64.packet.checksum import adjust16, pseudo_header_sum_v4, pseudo_header_sum_v6, verifies


def reference_sum(data: bytes) -> int:
    """RFC 1071 §4.1 style: add 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reference_checksum(data: bytes) -> int:
    return ~reference_sum(data) & 0xFFFF


def test_rfc1071_3_numerical_example() -> None:
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (big-endian words).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert fold(sum_words(data)) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_rfc1624_5_example_eqn3() -> None:
    # RFC 1624 §5: m = 0x5555 -> m' = 0x3285, other octets sum 0xCD7A, HC = 0xDD2F.
    # Eqn. 3 gives 0x0000, like recomputation; eqn. 2 would have given 0xFFFF.
    assert finish(0xCD7A + 0x5555) == 0xDD2F
    assert update_checksum(0xDD2F, b"\x55\x55", b"\x32\x85") == 0x0000
    assert finish(0xCD7A + 0x3285) == 0x0000
    assert update_checksum_words(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_known_ipv4_header_checksum() -> None:
    # A classic worked example: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861
    assert internet_checksum(header[:10] + b"\xb8\x61" + header[12:]) == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_rfc1071_sum_matches_reference(data: bytes) -> None:
    assert internet_checksum(data) == reference_checksum(data) or (
        # The only representational difference: all-zero data (RFC 1624 §3 +0/-0).
        not any(data) and internet_checksum(data) == 0xFFFF
    )
    assert fold(sum_words(data)) % 0xFFFF == reference_sum(data) % 0xFFFF


@settings(max_examples=20, deadline=None)
@given(st.integers(2049, 70000), st.integers(0, 2**32), st.sampled_from([0, 0xFF, None]))
def test_large_buffers_take_the_folding_path(size: int, seed: int, fill: int | None) -> None:
    data = random.Random(seed).randbytes(size) if fill is None else bytes([fill]) * size
    assert internet_checksum(data) == reference_checksum(data) or not any(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=2, max_size=200), st.data())
def test_rfc1624_incremental_matches_recompute(data: bytes, draw: st.DataObject) -> None:
    data = data + b"\x01" * (len(data) % 2)  # even length, and never all zero
    at = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    width = draw.draw(st.sampled_from([2, 4, 16])) if at + 16 <= len(data) else 2
    new_field = draw.draw(st.binary(min_size=width, max_size=width))
    old = internet_checksum(data)
    changed = data[:at] + new_field + data[at + width :]
    assume(any(changed))  # an all-zero buffer has no incremental form to check
    assert update_checksum(old, data[at : at + width], new_field) == internet_checksum(changed)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_sums_add_when_the_first_part_is_even(a: bytes, b: bytes) -> None:
    a = a + b"\0" * (len(a) % 2)
    assert fold(sum_words(a) + sum_words(b)) % 0xFFFF == fold(sum_words(a + b)) % 0xFFFF


def test_pseudo_headers_match_wire_layout() -> None:
    s4, d4 = ip_address("192.0.2.1"), ip_address("198.51.100.7")
    # RFC 9293 §3.1: src, dst, zero, PTCL, TCP length.
    wire4 = s4.packed + d4.packed + bytes([0, 6]) + (40).to_bytes(2, "big")
    assert fold(pseudo_header_sum(s4, d4, 6, 40)) == fold(sum_words(wire4))
    assert pseudo_header_sum_v4(s4.packed, d4.packed, 6, 40) == pseudo_header_sum(s4, d4, 6, 40)
    s6, d6 = ip_address("2001:db8::1"), ip_address("64:ff9b::c000:201")
    # RFC 8200 §8.1: src, dst, 32-bit length, 3 zero bytes, next header.
    wire6 = s6.packed + d6.packed + (70000).to_bytes(4, "big") + bytes([0, 0, 0, 17])
    assert fold(pseudo_header_sum(s6, d6, 17, 70000)) == fold(sum_words(wire6))
    assert pseudo_header_sum_v6(s6.packed, d6.packed, 17, 70000) == pseudo_header_sum(
        s6, d6, 17, 70000
    )


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_rfc1624_fast_word_update_equals_general_form(ck: int, old: int, new: int) -> None:
    assert adjust16(ck, old, new) == update_checksum_words(ck, old, new)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 1 << 40))
def test_verifies_agrees_with_fold(data: bytes, initial: int) -> None:
    assert verifies(data, initial) == (fold(sum_words(data) + initial) == 0xFFFF)
