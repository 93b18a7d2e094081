"""Readiness report: aggregation per destination, the text table and the JSON form."""

import json

from hypothesis import given
from hypothesis import strategies as st

from proxy64.report import Observation, ReadinessReport, human_bytes


def sample() -> ReadinessReport:
    report = ReadinessReport()
    report.add(Observation("v4only.example:443", "dns64-synthesized", "nat64", 100, 5000, True))
    report.add(Observation("v4only.example:443", "dns64-synthesized", "nat64", 50, 2048, True))
    report.add(Observation("[2001:db8::1]:443", "native-ipv6", None, 10, 20, True))
    report.add(Observation("192.0.2.1:80", None, None, 0, 0, False, "cannot connect: refused"))
    report.add(Observation("203.0.113.9:80", "ipv4-literal-mapped", "embedded", 1, 2, True))
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
        "strict_nat64_refuses": 0,
    }


def test_table_is_aligned_and_names_ipv4_only_dependencies() -> None:
    table = sample().to_table()
    lines = table.splitlines()
    assert lines[0] == "proxy64 readiness report"
    header = lines[1]
    assert header.split() == ["DESTINATION", "REACHED", "EGRESS", "CONNS", "FAILED", "UP", "DOWN"]
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
    ]
    # columns line up: each REACHED cell starts where the header's does
    column = header.index("REACHED")
    for line in lines[2:6]:
        assert line[column - 2 : column] == "  " and line[column] != " "
    assert "4 destinations, 2 IPv4-only (reached through NAT64), 5 connections, 1 failed" in table
    assert "192.0.2.1:80: last failure: cannot connect: refused" in table


def test_json_round_trips() -> None:
    data = json.loads(sample().to_json())
    assert data["version"] == 1
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
    }


def test_empty_report() -> None:
    report = ReadinessReport()
    assert "0 destinations" in report.to_table()
    assert json.loads(report.to_json())["destinations"] == []


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


def test_rfc6052_3_1_strict_nat64_mark_in_json_table_and_summary() -> None:
    report = ReadinessReport()
    report.add(Observation("cgn.example:80", "dns64-synthesized", "nat64", 10, 20, True))
    report.add(
        Observation(
            "cgn.example:80", "dns64-synthesized", "nat64", 1, 2, True, strict_nat64_refuses=True
        )
    )
    report.add(Observation("8.8.8.8:53", "ipv4-literal-mapped", "nat64", 1, 1, True))
    data = json.loads(report.to_json())
    assert data["summary"]["strict_nat64_refuses"] == 1
    assert [d["strict_nat64_refuses"] for d in data["destinations"]] == [True, False]
    assert (
        "  cgn.example:80: a strict NAT64 would refuse this (non-global IPv4 under "
        "64:ff9b::/96, RFC 6052 §3.1); see how the app fares with --strict-wkp"
    ) in report.to_table().splitlines()
