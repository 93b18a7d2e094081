"""The dialer's destination rules (proxy64/policy.py applied in Dialer._admit): localhost
and /etc/hosts before DNS, this host and link-local refused behind a shared listener,
--strict-wkp, and the message when the NAT64 refuses a non-global IPv4 (RFC 6052 §3.1)."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import (
    AddressMappingError,
    DialCause,
    DialError,
    NotAllowedError,
    SocksReply,
)
from proxy64.net.context import ConnectionRecord
from proxy64.policy import DestinationPolicy
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.fake_net import FakeHostInfo, FakeNet, Outcome
from tests.helpers.fake_net import make_dialer as make
from tests.helpers.fakes import FakeResolver

WKP = Nat64Prefix.parse("64:ff9b::/96")
NSP = Nat64Prefix.parse("2001:db8:64::/96")


@pytest.mark.parametrize("name", ["localhost", "app.localhost", "LOCALHOST."])
async def test_rfc6761_6_3_localhost_is_loopback_without_dns(
    autojump_clock: Any, name: str
) -> None:
    net = FakeNet({"::1": Outcome(0.01, errno.ECONNREFUSED), "127.0.0.1": Outcome(0.01)})
    resolver = FakeResolver({})
    d = make(net, resolver, hosts=FakeHostInfo({}))
    dialed = await d.connect(Destination.from_text(name, 8080))
    assert dialed.remote == (IPv4Address("127.0.0.1"), 8080)  # ::1 refused, 127.0.0.1 raced
    assert dialed.reached is Reached.THIS_HOST and dialed.egress is None
    assert [host for _, host in net.started] == ["::1", "127.0.0.1"]
    assert resolver.asked == []


async def test_etc_hosts_before_dns_ipv4_entry_is_an_ipv4_literal(autojump_clock: Any) -> None:
    net = FakeNet({"64:ff9b::a09:807": Outcome(0.01), "2001:db8::7": Outcome(0.01)})
    resolver = FakeResolver({"intranet.example": [("2001:db8::99", False)]})
    hosts = FakeHostInfo({"intranet.example": ["10.9.8.7"], "v6.example": ["2001:db8::7"]})
    d = make(net, resolver, hosts=hosts)
    dialed = await d.connect(Destination("intranet.example", 80))
    assert dialed.remote == (IPv6Address("64:ff9b::a09:807"), 80)
    assert dialed.reached is Reached.IPV4_LITERAL and dialed.egress is Egress.NAT64
    assert dialed.strict_nat64_refuses  # 10/8 under the WKP: the readiness mark
    dialed = await d.connect(Destination("v6.example", 80))
    assert dialed.reached is Reached.NATIVE_IPV6 and dialed.egress is None
    assert resolver.asked == []  # DNS never asked for a listed name
    assert d.targets_now(Destination("intranet.example", 80)) is not None  # no waiting either


async def test_etc_hosts_ipv4_entry_under_embedded_egress(autojump_clock: Any) -> None:
    net = FakeNet({"10.9.8.7": Outcome(0.01)})
    hosts = FakeHostInfo({"intranet.example": ["10.9.8.7"]})
    d = make(net, hosts=hosts, egress=Egress.EMBEDDED)
    dialed = await d.connect(Destination("intranet.example", 80))
    assert dialed.remote == (IPv4Address("10.9.8.7"), 80)
    assert dialed.reached is Reached.IPV4_LITERAL and dialed.egress is Egress.EMBEDDED


SHARED = DestinationPolicy(protect_host=True)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "localhost",
        "192.0.2.2",  # one of this host's own addresses
        "2001:db8:5::2",
        "169.254.169.254",  # cloud metadata
        "64:ff9b::a9fe:a9fe",  # the same through the NAT64
        "fd00:ec2::254",
        "fe80::1",
        "metadata.example",  # a name synthesized to the metadata address
    ],
)
@pytest.mark.parametrize("egress", list(Egress))
async def test_shared_listener_refuses_this_host_and_link_local(
    autojump_clock: Any, host: str, egress: Egress
) -> None:
    net = FakeNet({})
    resolver = FakeResolver({"metadata.example": [("64:ff9b::a9fe:a9fe", True)]})
    hosts = FakeHostInfo({}, own=["127.0.0.1", "192.0.2.2", "2001:db8:5::2"])
    d = make(net, resolver, egress=egress, policy=SHARED, hosts=hosts)
    with pytest.raises(NotAllowedError) as info:
        await d.connect(Destination.from_text(host, 80))
    assert info.value.socks_reply is SocksReply.NOT_ALLOWED and info.value.http_status == 403
    assert "--allow-host-access" in str(info.value)
    assert net.sockets == []  # refused before any socket


async def test_shared_listener_keeps_the_allowed_addresses_of_a_name(autojump_clock: Any) -> None:
    net = FakeNet({"64:ff9b::5db8:d822": Outcome(0.01)})
    resolver = FakeResolver(
        {"mixed.example": [("64:ff9b::a9fe:a9fe", True), ("64:ff9b::5db8:d822", True)]}
    )
    d = make(net, resolver, policy=SHARED, hosts=FakeHostInfo({}))
    dialed = await d.connect(Destination("mixed.example", 80))
    assert dialed.remote == (IPv6Address("64:ff9b::5db8:d822"), 80)
    assert [host for _, host in net.started] == ["64:ff9b::5db8:d822"]


STRICT = DestinationPolicy(strict_wkp=True)


@pytest.mark.parametrize("egress", list(Egress))
async def test_rfc6052_3_1_strict_wkp_refuses_before_dialing(
    autojump_clock: Any, egress: Egress
) -> None:
    net = FakeNet({"64:ff9b::808:808": Outcome(0.01), "8.8.8.8": Outcome(0.01)})
    resolver = FakeResolver({"cgn.example": [("64:ff9b::6440:a", True)]})
    d = make(net, resolver, egress=egress, policy=STRICT)
    for host in ("10.1.2.3", "100.64.0.10", "cgn.example", "64:ff9b::c0a8:101"):
        with pytest.raises(AddressMappingError) as info:
            await d.connect(Destination.from_text(host, 80))
        assert "--strict-wkp" in str(info.value) and "RFC 6052 §3.1" in str(info.value)
        assert info.value.socks_reply is SocksReply.NOT_ALLOWED
        assert info.value.strict_nat64_refuses
    assert net.sockets == []
    assert (await d.connect(Destination(IPv4Address("8.8.8.8"), 80))).remote[0] in (
        IPv6Address("64:ff9b::808:808"),
        IPv4Address("8.8.8.8"),
    )


async def test_strict_wkp_does_not_touch_a_network_specific_prefix(autojump_clock: Any) -> None:
    mapped = str(NSP.embed(IPv4Address("10.1.2.3")))
    net = FakeNet({mapped: Outcome(0.01)})
    d = make(net, prefix=NSP, policy=STRICT)
    dialed = await d.connect(Destination(IPv4Address("10.1.2.3"), 80))
    assert dialed.remote == (IPv6Address(mapped), 80) and not dialed.strict_nat64_refuses


@pytest.mark.parametrize(
    ("error", "cause", "reply"),
    [
        (errno.ENETUNREACH, DialCause.NETWORK_UNREACHABLE, SocksReply.NETWORK_UNREACHABLE),
        (errno.EHOSTUNREACH, DialCause.HOST_UNREACHABLE, SocksReply.HOST_UNREACHABLE),
        (errno.EACCES, DialCause.OTHER, SocksReply.GENERAL_FAILURE),
    ],
)
async def test_rfc6052_3_1_nat64_refusal_keeps_the_reply_and_names_the_cause(
    autojump_clock: Any, error: int, cause: DialCause, reply: SocksReply
) -> None:
    """The translator refused 10.64.0.10 under the WKP (ICMPv6 unreachable): the reply is
    the errno's, the message says why in one line and how to get out."""
    net = FakeNet(
        {"64:ff9b::a40:a": Outcome(0.001, error), "64:ff9b::808:808": Outcome(0.001, error)}
    )
    d = make(net)
    with pytest.raises(DialError) as info:
        await d.connect(Destination(IPv4Address("10.64.0.10"), 80))
    exc = info.value
    assert (exc.cause, exc.socks_reply, exc.http_status) == (cause, reply, 502)
    message = str(exc)
    assert "\n" not in message
    assert (
        "the NAT64 likely refuses 10.64.0.10 under 64:ff9b::/96: strict translators (RFC 6052 "
        "§3.1, tayga >= 0.9.4) do not carry non-global IPv4 under the well-known prefix; use "
        "the network's specific prefix with --nat64-prefix"
    ) in message
    assert exc.strict_nat64_refuses
    record = ConnectionRecord("socks5", "127.0.0.1:1")
    record.failed(exc)
    assert record.strict_nat64_refuses and record.outcome == message
    # a global address gets no such hint: unreachable is just unreachable
    with pytest.raises(DialError) as info:
        await d.connect(Destination(IPv4Address("8.8.8.8"), 80))
    assert "likely refuses" not in str(info.value) and not info.value.strict_nat64_refuses
