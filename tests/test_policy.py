"""The destination policy (proxy64/policy.py): this host, link-local, --strict-wkp, and
the NAT64 refusal hint. Pure: tables, then hypothesis over every address."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

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
SHARED = DestinationPolicy(protect_host=True)
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
    for address in ("127.0.0.1", "::1", "169.254.169.254", "10.0.0.1"):
        parsed = ip_address(address)
        ipv4 = parsed if isinstance(parsed, IPv4Address) else None
        assert screen(parsed, ipv4, policy=OPEN, well_known=True, prefix=WKP) is None


@pytest.mark.parametrize(
    ("dialed", "ipv4", "kind"),
    [
        ("127.0.0.1", "127.0.0.1", RefusalKind.THIS_HOST),
        ("::1", None, RefusalKind.THIS_HOST),
        ("192.0.2.2", "192.0.2.2", RefusalKind.THIS_HOST),  # one of "our" addresses below
        ("2001:db8::2", None, RefusalKind.THIS_HOST),
        ("64:ff9b::c000:202", "192.0.2.2", RefusalKind.THIS_HOST),  # via the NAT64 to us
        ("169.254.169.254", "169.254.169.254", RefusalKind.LINK_LOCAL),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", RefusalKind.LINK_LOCAL),  # cloud metadata
        ("fd00:ec2::254", None, RefusalKind.LINK_LOCAL),
        ("fe80::1", None, RefusalKind.LINK_LOCAL),
    ],
)
def test_shared_listener_refuses_this_host_and_link_local(
    dialed: str, ipv4: str | None, kind: RefusalKind
) -> None:
    own = {IPv4Address("192.0.2.2"), IPv6Address("2001:db8::2")}
    found = screen(
        ip_address(dialed),
        IPv4Address(ipv4) if ipv4 else None,
        policy=SHARED,
        well_known=True,
        prefix=WKP,
        own_addresses=own,
    )
    assert found is not None and found.kind is kind
    assert "--allow-host-access" in found.message  # the way out is named


def test_shared_listener_reaches_the_rest() -> None:
    for dialed, ipv4 in (("64:ff9b::a00:1", "10.0.0.1"), ("2001:db8::9", None)):
        assert (
            screen(
                ip_address(dialed),
                IPv4Address(ipv4) if ipv4 else None,
                policy=SHARED,
                well_known=True,
                prefix=WKP,
                own_addresses={IPv4Address("192.0.2.2")},
            )
            is None
        )


def test_rfc6052_3_1_strict_wkp_message() -> None:
    found = screen(
        IPv6Address("64:ff9b::a01:203"),
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
    found = screen(ipv4, ipv4, policy=STRICT, well_known=well_known, prefix=WKP)
    assert (found is not None) is (well_known and strict_nat64_refuses(ipv4))


@given(ipv4s, st.booleans())
def test_nat64_hint_only_for_non_global_under_the_wkp(ipv4: IPv4Address, well_known: bool) -> None:
    hint = nat64_refusal_hint(ipv4, WKP, well_known=well_known)
    assert (hint is not None) is (well_known and not is_global_ipv4(ipv4))
    if hint is not None:
        assert str(ipv4) in hint and "RFC 6052 §3.1" in hint and "--nat64-prefix" in hint
        assert "\n" not in hint


@given(st.integers(min_value=0, max_value=(1 << 128) - 1).map(IPv6Address))
def test_native_ipv6_is_never_refused_by_strict(address: IPv6Address) -> None:
    assert screen(address, None, policy=STRICT, well_known=True, prefix=WKP) is None
