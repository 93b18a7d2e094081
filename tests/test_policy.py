"""The destination policy (proxy64/policy.py): localhost, loopback, link-local, --strict-wkp
and the NAT64 refusal hint (this host and link-local as built-in rules: test_rules.py).
Pure: tables, then hypothesis over every address."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.policy import (
    DestinationPolicy,
    RefusalKind,
    is_link_local,
    is_localhost_name,
    is_loopback,
    nat64_refusal_hint,
    screen,
)
from proxy64.proto.rfc6052 import is_global_ipv4, strict_nat64_refuses

WKP = "64:ff9b::/96"
STRICT = DestinationPolicy(strict_wkp=True)
OPEN = DestinationPolicy()


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("app.localhost", True),
        ("a.b.localhost.", True),
        ("localhost.example", False),
        ("notlocalhost", False),
        ("mylocalhost", False),
        ("example.com", False),
    ],
)
def test_rfc6761_6_3_localhost_names(name: str, local: bool) -> None:
    assert is_localhost_name(name) is local


@pytest.mark.parametrize(
    ("address", "loopback", "link_local"),
    [
        ("127.0.0.1", True, False),
        ("127.255.0.9", True, False),
        ("::1", True, False),
        ("::ffff:127.0.0.1", True, False),
        ("169.254.169.254", False, True),
        ("fe80::1", False, True),
        ("febf::1", False, True),
        ("fd00:ec2::254", False, True),
        ("::ffff:169.254.1.1", False, True),
        ("10.0.0.1", False, False),
        ("2001:db8::1", False, False),
        ("fd00:ec2::253", False, False),
    ],
)
def test_loopback_and_link_local(address: str, loopback: bool, link_local: bool) -> None:
    parsed = ip_address(address)
    assert is_loopback(parsed) is loopback
    assert is_link_local(parsed) is link_local


def test_open_policy_refuses_nothing() -> None:
    for address in ("127.0.0.1", "169.254.169.254", "10.0.0.1"):
        assert screen(IPv4Address(address), policy=OPEN, well_known=True, prefix=WKP) is None


def test_rfc6052_3_1_strict_wkp_message() -> None:
    found = screen(
        IPv4Address("10.1.2.3"),
        policy=STRICT,
        well_known=True,
        prefix=WKP,
    )
    assert found is not None and found.kind is RefusalKind.STRICT_WKP
    assert found.message == (
        "--strict-wkp: a strict NAT64 refuses 10.1.2.3 under 64:ff9b::/96 (RFC 6052 §3.1, as "
        "tayga >= 0.9.4 does by default); use the network's specific prefix with --nat64-prefix"
    )


ipv4s = st.integers(min_value=0, max_value=(1 << 32) - 1).map(IPv4Address)


@given(ipv4s, st.booleans())
def test_strict_refuses_exactly_the_strict_set_under_the_wkp(
    ipv4: IPv4Address, well_known: bool
) -> None:
    found = screen(ipv4, policy=STRICT, well_known=well_known, prefix=WKP)
    assert (found is not None) is (well_known and strict_nat64_refuses(ipv4))


@given(ipv4s, st.booleans())
def test_nat64_hint_only_for_non_global_under_the_wkp(ipv4: IPv4Address, well_known: bool) -> None:
    hint = nat64_refusal_hint(ipv4, WKP, well_known=well_known)
    assert (hint is not None) is (well_known and not is_global_ipv4(ipv4))
    if hint is not None:
        assert str(ipv4) in hint and "RFC 6052 §3.1" in hint and "--nat64-prefix" in hint
        assert "\n" not in hint


def test_native_ipv6_is_never_refused_by_strict() -> None:
    assert screen(None, policy=STRICT, well_known=True, prefix=WKP) is None
