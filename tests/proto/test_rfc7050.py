"""RFC 7050 §3 prefix derivation from ipv4only.arpa AAAA records."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from hypothesis import given
from hypothesis import strategies as st

from proxy64.proto.rfc6052 import PREFIX_LENGTHS, Nat64Prefix
from proxy64.proto.rfc7050 import WKAS, derive_prefixes, wka_positions

WKA170, WKA171 = WKAS


def test_rfc7050_well_known_prefix() -> None:
    answer = [IPv6Address("64:ff9b::c000:aa"), IPv6Address("64:ff9b::c000:ab")]
    assert derive_prefixes(answer) == [Nat64Prefix.parse("64:ff9b::/96")]


def test_rfc7050_64_prefix_skips_u_octet() -> None:
    # NETWORK-NOTES: for P::/64 a DNS64 answers P:c0:0:aa00:0 (u octet skipped).
    answer = [IPv6Address("2001:db8:122:344:c0:0:aa00:0")]
    assert derive_prefixes(answer) == [Nat64Prefix.parse("2001:db8:122:344::/64")]


def test_rfc7050_several_prefixes_all_returned_in_order() -> None:
    a = Nat64Prefix.parse("2001:db8:100::/40")
    b = Nat64Prefix.parse("64:ff9b::/96")
    answer = [a.embed(WKA170), b.embed(WKA170), a.embed(WKA171)]
    assert derive_prefixes(answer) == [a, b]


def test_rfc7050_addresses_without_wka_are_ignored() -> None:
    answer = [IPv6Address("2001:db8::1"), IPv6Address("64:ff9b::102:304")]
    assert derive_prefixes(answer) == []


def test_rfc7050_ambiguous_address_resolved_by_the_other_wka() -> None:
    """A /96 prefix whose own bits hold c0 00 00 aa at the /56 position (bytes 7, 9-11).

    RFC 7050 §3: the WKA appears at two positions; the 171 address decides for /96.
    """
    prefix = Nat64Prefix(IPv6Network("2001:db8:0:c0:0:aa::/96"))
    ambiguous = prefix.embed(WKA170)
    assert len(wka_positions(ambiguous)) == 2
    assert derive_prefixes([ambiguous]) == []  # ambiguous alone: ignored
    assert derive_prefixes([ambiguous, prefix.embed(WKA171)]) == [prefix]


@st.composite
def prefixes(draw: st.DrawFn) -> Nat64Prefix:
    length = draw(st.sampled_from(PREFIX_LENGTHS))
    bits = draw(st.integers(min_value=0, max_value=(1 << length) - 1)) << (128 - length)
    packed = bytearray(bits.to_bytes(16, "big"))
    if length < 96:
        packed[8] = 0  # RFC 6052 §2.2 u octet
    return Nat64Prefix(IPv6Network((IPv6Address(bytes(packed)), length)))


@given(prefixes())
def test_rfc7050_both_wkas_give_back_the_prefix(prefix: Nat64Prefix) -> None:
    answer = [prefix.embed(w) for w in WKAS]
    assert derive_prefixes(answer) == [prefix]


@given(st.lists(st.integers(min_value=0, max_value=(1 << 128) - 1).map(IPv6Address), max_size=8))
def test_rfc7050_random_addresses_never_raise(addresses: list[IPv6Address]) -> None:
    for prefix in derive_prefixes(addresses):
        assert prefix.length in PREFIX_LENGTHS
        assert any(prefix.contains(a) and prefix.extract(a) in WKAS for a in addresses)
