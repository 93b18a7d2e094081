"""Readiness report: aggregation per destination, the text table and the JSON form."""

import json
from ipaddress import IPv6Network

from hypothesis import given
from hypothesis import strategies as st

from proxy64.readiness import Verdict, assess_all
from proxy64.readiness_render import ReadinessResult, human_bytes, to_json, to_table
from proxy64.report import Observation, ReadinessReport


def result_of(report: ReadinessReport) -> ReadinessResult:
    return ReadinessResult.of(report, level=None, status=0, command=["app"], mode="run")


def sample() -> ReadinessReport:
    report = ReadinessReport()
    report.add(Observation("v4only.example:443", "dns64-synthesized", "nat64", 100, 5000, True))
    report.add(Observation("v4only.example:443", "dns64-synthesized", "nat64", 50, 2048, True))
    report.add(Observation("[2001:db8::1]:443", "native-ipv6", None, 10, 20, True))
    report.add(
        Observation("192.0.2.1:80", None, None, 0, 0, False, "cannot connect: refused", kind="ipv4")
    )
    report.add(
        Observation("203.0.113.9:80", "ipv4-literal-mapped", "embedded", 1, 2, True, kind="ipv4")
    )
    return report


def test_aggregates_per_destination_in_first_seen_order() -> None:
    stats = sample().destinations()
    assert [s.destination for s in stats] == [
        "v4only.example:443",
        "[2001:db8::1]:443",
        "192.0.2.1:80",
        "203.0.113.9:80",
    ]
    first = stats[0]
    assert (first.connections, first.bytes_up, first.bytes_down) == (2, 150, 7048)
    assert first.ipv4_only and not stats[1].ipv4_only
    assert stats[2].failures == 1 and stats[2].last_failure == "cannot connect: refused"
    assert not stats[2].ipv4_only  # never reached: unknown, not IPv4-only
    assert sample().summary() == {
        "destinations": 4,
        "ipv4_only": 2,
        "native_ipv6": 1,
        "connections": 5,
        "failures": 1,
    }


def test_table_is_aligned_and_names_ipv4_only_dependencies() -> None:
    table = to_table(result_of(sample()))
    lines = table.splitlines()
    assert lines[0] == "proxy64 readiness report"
    header = lines[1]
    assert header.split() == [
        "DESTINATION", "REACHED", "EGRESS", "CONNS", "FAILED", "UP", "DOWN", "VERDICT",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith("v4only.example:443"))
    assert row.split() == [
        "v4only.example:443",
        "dns64-synthesized",
        "nat64",
        "2",
        "0",
        "150",
        "B",
        "6.9",
        "KiB",
        "nat64",
    ]
    # columns line up: each REACHED cell starts where the header's does
    column = header.index("REACHED")
    for line in lines[2:6]:
        assert line[column - 2 : column] == "  " and line[column] != " "
    assert "4 destinations, 2 IPv4-only (reached through NAT64), 5 connections, 1 failed" in table
    assert "192.0.2.1:80: clat: an IPv4 literal given to the proxy" in table
    assert "failed here: cannot connect: refused" in table
    assert "app exited with status 0" in table


def test_json_round_trips() -> None:
    data = json.loads(to_json(result_of(sample())))
    assert data["version"] == 2
    assert data["summary"]["ipv4_only"] == 2
    first = data["destinations"][0]
    assert first == {
        "destination": "v4only.example:443",
        "reached": ["dns64-synthesized"],
        "egress": ["nat64"],
        "ipv4_only": True,
        "connections": 2,
        "failures": 0,
        "bytes_up": 150,
        "bytes_down": 7048,
        "last_failure": "",
        "strict_nat64_refuses": False,
        "front_ends": [],
        "addresses": [],
        "a_record_of": [],
        "verdict": "nat64",
        "reason": "no AAAA record: reached through a synthesized AAAA (DNS64) and NAT64; "
        "an IPv6-only network without NAT64 cannot reach it",
        "reached_here": True,
    }


def test_empty_report() -> None:
    report = ReadinessReport()
    assert "0 destinations" in to_table(result_of(report))
    assert json.loads(to_json(result_of(report)))["destinations"] == []


@given(st.integers(0, 2**50))
def test_human_bytes_never_fails(count: int) -> None:
    text = human_bytes(count)
    assert text.split()[1] in {"B", "KiB", "MiB", "GiB"}


def test_report_is_bounded() -> None:
    report = ReadinessReport(max_destinations=3)
    for n in range(10):
        report.add(Observation(f"host{n}.example:443", "native-ipv6", None, 1, 1, True))
    rows = report.destinations()
    assert [r.destination for r in rows] == [
        "host0.example:443",
        "host1.example:443",
        "host2.example:443",
        "(other destinations)",
    ]
    assert rows[-1].connections == 7
    report.add(Observation("host1.example:443", "native-ipv6", None, 1, 1, True))
    assert rows[1].connections == 2  # known destinations keep their own row


def test_rfc6052_3_1_strict_nat64_mark_kept_per_destination() -> None:
    """The dialer's mark survives aggregation (any connection marked marks the row), also
    for a failed dial that left no address, and reaches the readiness verdict."""
    report = ReadinessReport(prefix=IPv6Network("64:ff9b::/96"))
    report.add(Observation("cgn.example:80", "dns64-synthesized", "nat64", 10, 20, True))
    report.add(
        Observation(
            "cgn.example:80", None, None, 0, 0, False, "network unreachable",
            strict_nat64_refuses=True,
        )
    )  # fmt: skip
    report.add(Observation("8.8.8.8:53", "ipv4-literal-mapped", "nat64", 1, 1, True))
    rows = [s.as_dict() for s in report.destinations()]
    assert [r["strict_nat64_refuses"] for r in rows] == [True, False]
    verdicts = assess_all(report.destinations(), IPv6Network("64:ff9b::/96"))
    assert verdicts[0].verdict is Verdict.STRICT_REFUSED
    assert "RFC 6052 §3.1" in verdicts[0].reason
