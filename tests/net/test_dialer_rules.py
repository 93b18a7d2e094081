"""Access rules in the dialer's one policy place (Dialer._admit): names against the
requested name, CIDRs against every planned target and the IPv4 behind it, whatever the
egress; the client's address; a reload's new rules for new dials; the reply says less
than the log line."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from proxy64.destination import Destination, Egress
from proxy64.errors import DeniedByRuleError, ResolutionError, SocksReply
from proxy64.policy import DestinationPolicy, PolicyInForce
from proxy64.rules import Action, parse_rule_line
from tests.helpers.fake_net import WKP, FakeHostInfo, FakeNet, Outcome
from tests.helpers.fake_net import make_dialer as make
from tests.helpers.fakes import FakeResolver


def policy(*lines: str, protect_host: bool = False) -> DestinationPolicy:
    parsed = []
    for text in lines:
        action, _, rest = text.partition(" ")
        parsed.append(parse_rule_line(rest, f"--{action}", Action(action)))
    return DestinationPolicy(protect_host=protect_host, rules=tuple(parsed))


@pytest.mark.parametrize("egress", list(Egress))
@pytest.mark.parametrize(
    "host", ["10.0.0.1", "64:ff9b::a00:1", "private.example"], ids=["ipv4", "nat64", "name"]
)
async def test_cidr_rule_holds_for_literal_nat64_address_and_resolved_name(
    autojump_clock: Any, egress: Egress, host: str
) -> None:
    net = FakeNet({})
    resolver = FakeResolver({"private.example": [("64:ff9b::a00:1", True)]})
    d = make(net, resolver, egress=egress, policy=policy("deny 10.0.0.0/8"))
    with pytest.raises(DeniedByRuleError) as info:
        await d.connect(Destination.from_text(host, 80), "192.0.2.1:5000")
    error = info.value
    assert error.socks_reply is SocksReply.NOT_ALLOWED and error.http_status == 403
    assert "denied by rule 1 (deny dest 10.0.0.0/8, --deny)" in str(error)
    assert (
        error.reply_text()
        == f"{Destination.from_text(host, 80)} is not allowed by this proxy's access rules"
    )
    assert net.sockets == []  # refused before any socket


async def test_ipv6_cidr_rule_holds_under_the_embedded_egress(autojump_clock: Any) -> None:
    d = make(FakeNet({}), egress=Egress.EMBEDDED, policy=policy("deny 64:ff9b::/96"))
    with pytest.raises(DeniedByRuleError):
        await d.connect(Destination(IPv4Address("192.0.2.7"), 80))


async def test_denied_targets_are_dropped_and_the_rest_dialed(autojump_clock: Any) -> None:
    net = FakeNet({"2001:db8::9": Outcome(0.01)})
    resolver = FakeResolver({"dual.example": [("2001:db8::9", False), ("64:ff9b::a00:1", True)]})
    d = make(net, resolver, policy=policy("deny 10.0.0.0/8"))
    dialed = await d.connect(Destination("dual.example", 443))
    assert dialed.remote == (IPv6Address("2001:db8::9"), 443)
    assert [host for _, host in net.started] == ["2001:db8::9"]


async def test_name_suffix_port_and_client_rules(autojump_clock: Any) -> None:
    net = FakeNet({"2001:db8::9": Outcome(0.01)})
    resolver = FakeResolver(
        {
            name: [("2001:db8::9", False)]
            for name in ("a.corp.example", "corp.example", "ok.example")
        }
    )
    d = make(
        net,
        resolver,
        policy=policy(
            "allow a.corp.example client=192.0.2.0/24",
            "deny .corp.example",
            "deny ports=25",
            "deny client=2001:db8:bad::/48",
        ),
    )
    dest = Destination("a.corp.example", 443)
    assert (await d.connect(dest, "192.0.2.9:4000")).remote[0] == IPv6Address("2001:db8::9")
    for destination, client, number in [
        (dest, "198.51.100.1:4000", 2),  # the allow rule is for another client
        (Destination("corp.example", 443), "192.0.2.9:4000", 2),
        (Destination("ok.example", 25), "192.0.2.9:4000", 3),
        (Destination("ok.example", 443), "[2001:db8:bad::1]:4000", 4),
    ]:
        with pytest.raises(DeniedByRuleError) as info:
            await d.connect(destination, client)
        assert f"denied by rule {number} " in str(info.value)
    assert (await d.connect(Destination("ok.example", 443), "[2001:db8::1]:4000")).remote
    assert (await d.udp_target(Destination("ok.example", 53), "192.0.2.9:1")).remote


async def test_a_name_rule_decides_before_resolution_finds_nothing(autojump_clock: Any) -> None:
    resolver = FakeResolver({"empty.example": []})
    d = make(FakeNet({}), resolver, policy=policy("deny empty.example"))
    with pytest.raises(DeniedByRuleError):
        await d.connect(Destination("empty.example", 80))


async def test_user_allow_rule_opens_part_of_the_built_in_ones(autojump_clock: Any) -> None:
    net = FakeNet({"127.0.0.1": Outcome(0.01), "64:ff9b::a9fe:a9fe": Outcome(0.01)})
    hosts = FakeHostInfo({}, own=["192.0.2.2"])
    shared = policy(
        "allow 127.0.0.1 ports=8080", "allow 169.254.169.254 ports=80", protect_host=True
    )
    d = make(net, policy=shared, hosts=hosts)
    assert (await d.connect(Destination(IPv4Address("127.0.0.1"), 8080))).remote
    assert (await d.connect(Destination(IPv4Address("169.254.169.254"), 80))).remote
    for host, port, rule in [
        ("127.0.0.1", 22, "rule 3 (deny dest this-host, built-in)"),
        ("192.0.2.2", 8080, "rule 3 (deny dest this-host, built-in)"),
        ("169.254.169.254", 443, "rule 4 (deny dest link-local, built-in)"),
    ]:
        with pytest.raises(DeniedByRuleError) as info:
            await d.connect(Destination.from_text(host, port))
        assert rule in str(info.value) and "--allow-host-access" in str(info.value)


async def test_a_replaced_policy_applies_to_the_next_dial(autojump_clock: Any) -> None:
    net = FakeNet({"64:ff9b::a00:1": Outcome(0.01)})
    live = PolicyInForce(DestinationPolicy())
    d = make(net, policy=live)  # type: ignore[arg-type]
    destination = Destination(IPv4Address("10.0.0.1"), 80)
    assert (await d.connect(destination)).remote[0] == IPv6Address("64:ff9b::a00:1")
    live.set(policy("deny 10.0.0.0/8"))
    with pytest.raises(DeniedByRuleError):
        await d.connect(destination)
    live.set(DestinationPolicy())
    assert (await d.connect(destination)).remote


def test_targets_now_applies_the_rules_without_waiting() -> None:
    d = make(FakeNet({}), policy=policy("deny 10.0.0.0/8 ports=80"), prefix=WKP)
    with pytest.raises(DeniedByRuleError):
        d.targets_now(Destination(IPv4Address("10.0.0.1"), 80))
    (target,) = d.targets_now(Destination(IPv4Address("10.0.0.1"), 81)) or []
    assert target.address == IPv6Address("64:ff9b::a00:1")


async def test_a_denied_name_is_never_asked_of_dns(autojump_clock: Any) -> None:
    resolver = FakeResolver({"ads.example": [("2001:db8::ad", False)]})
    d = make(FakeNet({}), resolver, policy=policy("deny ports=22", "deny .ads.example"))
    with pytest.raises(DeniedByRuleError) as info:
        await d.connect(Destination("x.ads.example", 443))
    assert "denied by rule 2 (deny dest .ads.example, --deny)" in str(info.value)
    with pytest.raises(DeniedByRuleError):
        d.targets_now(Destination("ads.example", 443))
    assert resolver.asked == []
    # an address rule before it: the addresses are needed, so DNS is asked first
    d = make(FakeNet({}), resolver, policy=policy("allow 2001:db8::/32", "deny .ads.example"))
    with pytest.raises(ResolutionError):  # NXDOMAIN: resolution decided, not a rule
        await d.connect(Destination("x.ads.example", 443))
    assert resolver.asked == ["x.ads.example"]
