"""RFC 6052 addressing: the §2.4 examples, every prefix length, and the §3.1 rule."""

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.errors import AddressMappingError
from proxy64.proto.rfc6052 import (
    PREFIX_LENGTHS,
    Nat64Prefix,
    is_global_ipv4,
    strict_nat64_refuses,
)

# RFC 6052 §2.4, table 1: 192.0.2.33 under each example prefix.
RFC6052_2_4 = [
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
]


@pytest.mark.parametrize(("prefix", "expected"), RFC6052_2_4)
def test_rfc6052_2_4_examples(prefix: str, expected: str) -> None:
    nat64 = Nat64Prefix.parse(prefix)
    embedded = nat64.embed(IPv4Address("192.0.2.33"))
    assert embedded == IPv6Address(expected)
    assert nat64.extract(embedded) == IPv4Address("192.0.2.33")


def test_rfc6052_2_4_well_known_example() -> None:
    wkp = Nat64Prefix.parse("64:ff9b::/96")
    assert wkp.is_well_known
    assert wkp.embed(IPv4Address("192.0.2.33")) == IPv6Address("64:ff9b::192.0.2.33")


@pytest.mark.parametrize("length", [0, 16, 33, 80, 95, 104, 128])
def test_rfc6052_2_2_other_lengths_are_refused(length: int) -> None:
    with pytest.raises(AddressMappingError, match=r"RFC 6052 §2.2 allows only"):
        Nat64Prefix.parse(f"::/{length}")


def test_rfc6052_2_2_nonzero_u_octet_is_refused() -> None:
    for text in ("2001:db8:0:0:100::/64", "2001:db8:100:0:ff00::/40"):
        with pytest.raises(AddressMappingError, match="u octet"):
            Nat64Prefix.parse(text)
    # Addresses whose u octet is set are not inside a prefix (RFC 6052 §2.2).
    assert not Nat64Prefix.parse("2001:db8::/32").contains(IPv6Address("2001:db8:0:0:100::1"))


def test_prefix_with_host_bits_is_refused() -> None:
    with pytest.raises(AddressMappingError, match="bits set after the prefix length"):
        Nat64Prefix.parse("64:ff9b::1/96")


@pytest.mark.parametrize(
    "ipv4",
    [
        "10.1.2.3",
        "127.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "192.0.2.1",
        "198.18.0.1",
        "198.51.100.7",
        "203.0.113.9",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "169.254.1.1",
        "192.0.0.170",
    ],
)
def test_rfc6052_3_1_well_known_prefix_embeds_non_global(ipv4: str) -> None:
    """RFC 6052 §3.1 is the translator's rule: the arithmetic embeds every address, as
    the DNS64 servers BIND and Unbound do; is_global_ipv4 still says which are not global."""
    wkp = Nat64Prefix.parse("64:ff9b::/96")
    assert wkp.extract(wkp.embed(IPv4Address(ipv4))) == IPv4Address(ipv4)
    assert not is_global_ipv4(IPv4Address(ipv4))
    assert Nat64Prefix.parse("2001:db8:64::/96").embed(IPv4Address(ipv4))
    local = Nat64Prefix.parse("64:ff9b:1::/48")
    assert local.is_local_use
    assert local.extract(local.embed(IPv4Address(ipv4))) == IPv4Address(ipv4)


@pytest.mark.parametrize("ipv4", ["8.8.8.8", "192.0.0.9", "192.0.0.10", "1.1.1.1", "100.128.0.1"])
def test_rfc6890_global_addresses(ipv4: str) -> None:
    assert is_global_ipv4(IPv4Address(ipv4))
    Nat64Prefix.parse("64:ff9b::/96").embed(IPv4Address(ipv4))


prefixes = st.builds(
    lambda length, raw: Nat64Prefix.parse(_prefix_text(length, raw)),
    st.sampled_from(PREFIX_LENGTHS),
    st.integers(min_value=0, max_value=2**128 - 1),
)


def _prefix_text(length: int, raw: int) -> str:
    value = raw >> (128 - length) << (128 - length)
    packed = bytearray(value.to_bytes(16, "big"))
    if length < 96:
        packed[8] = 0
    return f"{IPv6Address(bytes(packed))}/{length}"


@given(prefixes, st.integers(min_value=0, max_value=2**32 - 1))
def test_embed_extract_round_trip_every_length(prefix: Nat64Prefix, raw: int) -> None:
    ipv4 = IPv4Address(raw)
    embedded = prefix.embed(ipv4)
    assert prefix.contains(embedded)
    assert embedded in prefix.network
    assert prefix.extract(embedded) == ipv4
    if prefix.length < 96:
        assert embedded.packed[8] == 0  # RFC 6052 §2.2 u octet
    # Suffix bits after the embedded address stay zero (RFC 6052 §2.2).
    used = prefix.length // 8 + 4 + (1 if prefix.length < 96 else 0)
    assert embedded.packed[used:] == bytes(16 - used)


def test_extract_outside_prefix_is_refused() -> None:
    with pytest.raises(AddressMappingError, match="not inside"):
        Nat64Prefix.parse("64:ff9b::/96").extract(IPv6Address("2001:db8::1"))


# tayga >= 0.9.4's wkpf-strict set (RFC 6052 §3.1 as a strict translator applies it).
STRICT_REFUSED = ["10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "172.16.0.1",
                  "172.31.255.1", "192.0.2.1", "192.168.0.1", "198.18.0.1", "198.19.255.1",
                  "198.51.100.1", "203.0.113.1"]  # fmt: skip
# Not in it: global addresses, and non-global ones a strict tayga still handles otherwise.
STRICT_CARRIED = ["8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "192.0.3.1",
                  "198.20.0.1", "127.0.0.1", "169.254.169.254", "192.0.0.170"]  # fmt: skip


@pytest.mark.parametrize("ipv4", STRICT_REFUSED)
def test_rfc6052_3_1_strict_nat64_refuses(ipv4: str) -> None:
    assert strict_nat64_refuses(IPv4Address(ipv4))
    assert not is_global_ipv4(IPv4Address(ipv4))  # the strict set is all non-global


@pytest.mark.parametrize("ipv4", STRICT_CARRIED)
def test_rfc6052_3_1_strict_nat64_carries(ipv4: str) -> None:
    assert not strict_nat64_refuses(IPv4Address(ipv4))


@given(st.integers(min_value=0, max_value=(1 << 32) - 1).map(IPv4Address))
def test_strict_set_is_inside_the_non_global_set(ipv4: IPv4Address) -> None:
    """Whatever a strict NAT64 refuses, RFC 6052 §3.1 calls non-global."""
    if strict_nat64_refuses(ipv4):
        assert not is_global_ipv4(ipv4)
