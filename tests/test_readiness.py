"""Verdicts per destination and the --require gate (proxy64/readiness.py), pure."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.proto.rfc6052 import strict_nat64_refuses
from proxy64.readiness import ALLOWED, Level, Verdict, assess_all, gate
from proxy64.report import Observation, ReadinessReport

WKP = IPv6Network("64:ff9b::/96")
NSP = IPv6Network("2001:db8:64::/96")


def verdicts(report: ReadinessReport) -> dict[str, tuple[str, str, bool]]:
    return {
        a.destination: (a.verdict.value, a.reason, a.reached)
        for a in assess_all(report.destinations(), report.prefix)
    }


def ok(dest: str, reached: str | None, remote: str | None, **kw: object) -> Observation:
    address = IPv6Address(remote) if remote and ":" in remote else None
    if remote and address is None:
        address = IPv4Address(remote)  # type: ignore[assignment]
    return Observation(dest, reached, None, 1, 1, True, remote=address, **kw)  # type: ignore[arg-type]


def test_each_verdict_from_what_proxy64_saw() -> None:
    report = ReadinessReport(prefix=WKP)
    report.add(ok("dual.example:443", "native-ipv6", "2001:db8::1", front_end="socks5"))
    report.add(ok("[2001:db8::2]:443", "native-ipv6", "2001:db8::2", kind="ipv6"))
    report.add(ok("v4only.example:80", "dns64-synthesized", "64:ff9b::64c8:a"))
    report.add(ok("100.200.0.10:80", "ipv4-literal-mapped", "64:ff9b::64c8:a", kind="ipv4"))
    report.add(ok("hosts-entry.example:80", "ipv4-literal-mapped", "64:ff9b::64c8:a"))
    report.add(ok("private.example:80", "dns64-synthesized", "64:ff9b::a40:a"))
    report.add(
        Observation("gone.example:80", None, None, 0, 0, False, "DNS NXDOMAIN: gone.example")
    )
    report.add(
        Observation(
            "192.0.2.7:8080", None, None, 0, 0, False, "AF_INET TCP ... unreachable",
            front_end="tun-tcp", kind="ipv4",
        )
    )  # fmt: skip
    got = verdicts(report)
    assert got["dual.example:443"][:1] == ("native-ipv6",)
    assert got["dual.example:443"][1] == "a native AAAA record"
    assert got["[2001:db8::2]:443"][1] == "an IPv6 literal"
    assert got["v4only.example:80"][0] == "nat64"
    assert "no AAAA record" in got["v4only.example:80"][1]
    assert got["100.200.0.10:80"][0] == "clat"
    assert got["100.200.0.10:80"][1].startswith("an IPv4 literal given to the proxy")
    assert got["hosts-entry.example:80"][0] == "clat"
    assert "hosts-file entry" in got["hosts-entry.example:80"][1]
    assert got["private.example:80"][0] == "strict-nat64-refused"
    assert got["private.example:80"][1].startswith("10.64.0.10 is not global IPv4")
    assert got["gone.example:80"] == ("failed", "DNS NXDOMAIN: gone.example", False)
    verdict, reason, reached = got["192.0.2.7:8080"]
    # a strict NAT64 would also refuse 192.0.2.7 behind a CLAT: the worse verdict wins
    assert verdict == "strict-nat64-refused" and not reached
    assert reason == (
        "192.0.2.7 is not global IPv4: a strict NAT64 refuses it under 64:ff9b::/96 "
        "(RFC 6052 §3.1), with or without a CLAT; failed here: AF_INET TCP ... unreachable"
    )


def test_hidden_ipv4_in_tun_is_clat_with_address_port_and_protocol() -> None:
    report = ReadinessReport(prefix=NSP)
    for _ in range(2):
        report.add(
            Observation(
                "100.200.0.10:9", None, None, 0, 0, False, "unreachable",
                front_end="tun-udp", kind="ipv4",
            )
        )  # fmt: skip
    report.add(
        Observation(
            "100.200.0.11:80", "ipv4-literal-mapped", "embedded", 5, 5, True,
            front_end="tun-tcp", kind="ipv4", remote=IPv4Address("100.200.0.11"),
        )
    )  # fmt: skip
    got = verdicts(report)
    assert got["100.200.0.10:9"] == (
        "clat",
        "an AF_INET UDP socket inside tun run to a literal (2 attempts), answered network "
        "unreachable as an IPv6-only network does: works only with a CLAT (464XLAT)",
        False,
    )
    assert got["100.200.0.11:80"][0] == "clat" and got["100.200.0.11:80"][2]
    assert "translated by --ipv4" in got["100.200.0.11:80"][1]


def hidden(dest: str, name: str, at: float) -> Observation:
    return Observation(
        dest, None, None, 0, 0, False, "unreachable",
        front_end="tun-tcp", kind="ipv4", a_record_of=name, span=(at, at),
    )  # fmt: skip


def test_happy_eyeballs_af_inet_attempt_takes_the_names_verdict_rfc8305() -> None:
    """curl inside tun run races the A record over AF_INET too; answered unreachable, it
    goes on over IPv6. That row is no IPv4 dependency; an app that only used the A
    record (nothing reached by name) is one."""
    report = ReadinessReport(prefix=WKP)
    report.add(hidden("100.200.0.10:80", "dual.example", at=10.2))
    report.add(
        Observation("dual.example:80", "native-ipv6", None, 1, 1, True, front_end="tun-tcp",
                    remote=IPv6Address("2001:db8::1"), span=(10.0, 11.0))
    )  # fmt: skip
    report.add(hidden("100.200.0.11:443", "v4app.example", at=10.3))
    got = verdicts(report)
    assert got["100.200.0.10:80"] == (
        "native-ipv6",
        "dual.example's A record, tried over an AF_INET TCP socket too (1 attempt) and "
        "answered unreachable; the app went on over IPv6 (see dual.example:80): no CLAT needed",
        True,
    )
    assert got["100.200.0.11:443"][0] == "clat"
    assert got["100.200.0.11:443"][1].startswith(
        "an AF_INET TCP socket inside tun run to v4app.example's A record (1 attempt)"
    )
    assessments = assess_all(report.destinations(), report.prefix)
    assert [a.destination for a in gate(assessments, Level.NO_CLAT).broken] == ["100.200.0.11:443"]


@pytest.mark.parametrize(
    ("at", "raced"),
    [(9.6, True), (10.0, True), (11.0, True), (9.4, False), (11.1, False), (30.0, False)],
)
def test_only_an_attempt_during_the_ipv6_connection_is_a_race(at: float, raced: bool) -> None:
    """An app that dials the name's address on its own later (or long before) is an IPv4
    dependency, even though the address is the name's A record."""
    report = ReadinessReport(prefix=NSP)
    report.add(
        Observation("dual.example:80", "native-ipv6", None, 1, 1, True, front_end="tun-tcp",
                    span=(10.0, 11.0))
    )  # fmt: skip
    report.add(hidden("100.200.0.10:80", "dual.example", at=at))
    verdict = verdicts(report)["100.200.0.10:80"][0]
    assert verdict == ("native-ipv6" if raced else "clat")


def test_network_specific_prefix_carries_private_ipv4() -> None:
    """RFC 6052 §3.1 binds only the well-known prefix."""
    report = ReadinessReport(prefix=IPv6Network("2001:db8:64::/96"))
    report.add(ok("private.example:80", "dns64-synthesized", "2001:db8:64::a40:a"))
    report.add(ok("10.1.2.3:80", "ipv4-literal-mapped", "10.1.2.3", kind="ipv4"))
    got = verdicts(report)
    assert got["private.example:80"][0] == "nat64"
    assert got["10.1.2.3:80"][0] == "clat"


def test_embedded_egress_dials_the_ipv4_itself_and_is_still_judged() -> None:
    report = ReadinessReport(prefix=WKP)
    report.add(
        Observation(
            "private.example:80", "dns64-synthesized", "embedded", 1, 1, True,
            remote=IPv4Address("172.16.0.5"),
        )
    )  # fmt: skip
    assert verdicts(report)["private.example:80"][0] == "strict-nat64-refused"


def test_partial_failures_are_in_the_reason_but_the_destination_was_reached() -> None:
    report = ReadinessReport(prefix=WKP)
    report.add(ok("v4only.example:80", "dns64-synthesized", "64:ff9b::64c8:a"))
    report.add(Observation("v4only.example:80", None, None, 0, 0, False, "timed out"))
    verdict, reason, reached = verdicts(report)["v4only.example:80"]
    assert verdict == "nat64" and reached
    assert reason.endswith("; 1 of 2 failed, last: timed out")


@pytest.mark.parametrize(
    ("level", "passes"),
    [
        (Level.REACHABLE, {"native-ipv6", "nat64", "clat", "strict-nat64-refused"}),
        (Level.NO_CLAT, {"native-ipv6", "nat64"}),
        (Level.NATIVE, {"native-ipv6"}),
    ],
)
def test_levels_allow_exactly(level: Level, passes: set[str]) -> None:
    assert {v.value for v in ALLOWED[level]} == passes


def test_gate_lists_the_destinations_that_break_it_in_order() -> None:
    report = ReadinessReport(prefix=WKP)
    report.add(ok("dual.example:443", "native-ipv6", "2001:db8::1"))
    report.add(ok("v4only.example:80", "dns64-synthesized", "64:ff9b::64c8:a"))
    report.add(ok("100.200.0.10:80", "ipv4-literal-mapped", "64:ff9b::64c8:a", kind="ipv4"))
    assessments = assess_all(report.destinations(), report.prefix)
    assert gate(assessments, Level.REACHABLE).passed
    no_clat = gate(assessments, Level.NO_CLAT)
    assert [a.destination for a in no_clat.broken] == ["100.200.0.10:80"]
    native = gate(assessments, Level.NATIVE)
    assert [a.destination for a in native.broken] == ["v4only.example:80", "100.200.0.10:80"]


def test_strict_set_is_tayga_0_9_4s() -> None:
    refused = ["10.0.0.1", "100.64.0.1", "172.31.255.255", "192.0.2.1", "192.168.1.1",
               "198.19.0.1", "198.51.100.1", "203.0.113.1"]  # fmt: skip
    assert all(strict_nat64_refuses(IPv4Address(a)) for a in refused)
    carried = ["100.200.0.10", "8.8.8.8", "100.128.0.1", "172.32.0.1", "192.0.0.170"]
    assert not any(strict_nat64_refuses(IPv4Address(a)) for a in carried)


observations = st.builds(
    Observation,
    destination=st.sampled_from(["a.example:1", "10.0.0.1:2", "[2001:db8::1]:3", "b:4"]),
    reached=st.sampled_from([None, "native-ipv6", "dns64-synthesized", "ipv4-literal-mapped"]),
    egress=st.sampled_from([None, "nat64", "embedded"]),
    bytes_up=st.integers(0, 10),
    bytes_down=st.integers(0, 10),
    ok=st.booleans(),
    outcome=st.text(max_size=20),
    front_end=st.sampled_from(["socks5", "http", "tun-tcp", "tun-udp", ""]),
    remote=st.one_of(
        st.none(),
        st.ip_addresses(v=4),
        st.ip_addresses(v=6, network="64:ff9b::/96"),
        st.ip_addresses(v=6),
    ),
)


@given(st.lists(observations, max_size=12), st.sampled_from([WKP, NSP, None]))
def test_levels_are_nested_and_every_verdict_has_a_reason(
    batch: list[Observation], prefix: IPv6Network | None
) -> None:
    """Whatever was seen: native breaks a superset of what no-clat breaks, which breaks a
    superset of what reachable breaks; a destination never reached breaks every level."""
    report = ReadinessReport(prefix=prefix)
    for obs in batch:
        kind = "ipv4" if obs.destination[0] == "1" else "ipv6" if "[" in obs.destination else "name"
        report.add(dataclasses.replace(obs, kind=kind))
    assessments = assess_all(report.destinations(), prefix)
    broken = {level: {a.destination for a in gate(assessments, level).broken} for level in Level}
    assert broken[Level.REACHABLE] <= broken[Level.NO_CLAT] <= broken[Level.NATIVE]
    for a in assessments:
        assert a.reason and "\n" not in a.reason
        if not a.reached:
            assert all(a.breaks(level) for level in Level)
        assert a.verdict in Verdict


def test_this_host_is_native_whatever_the_network_rfc6761_6_3() -> None:
    """localhost names and loopback literals need no network: native, never clat/nat64."""
    report = ReadinessReport(prefix=WKP)
    report.add(ok("localhost:8080", "this-host", "::1"))
    report.add(ok("127.0.0.1:5432", "this-host", "127.0.0.1", kind="ipv4"))
    report.add(ok("127.0.0.2:53", "ipv4-literal-mapped", "127.0.0.2", kind="ipv4"))  # embedded
    got = verdicts(report)
    for dest in ("localhost:8080", "127.0.0.1:5432", "127.0.0.2:53"):
        assert got[dest][0] == "native-ipv6", got[dest]
        assert got[dest][1].startswith("this host (loopback, RFC 6761 §6.3)")


def test_dialers_mark_alone_gives_the_strict_verdict() -> None:
    """A dial refused by the NAT64 leaves no address; the dialer's mark still tells."""
    report = ReadinessReport(prefix=WKP)
    report.add(
        Observation(
            "private.example:80", None, None, 0, 0, False, "network unreachable",
            strict_nat64_refuses=True,
        )
    )  # fmt: skip
    report.add(Observation("down.example:80", None, None, 0, 0, False, "network unreachable"))
    got = verdicts(report)
    assert got["private.example:80"][0] == "strict-nat64-refused"
    assert got["down.example:80"][0] == "failed"
