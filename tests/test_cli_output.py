"""Output a person or a program reads: resolve's table and JSON, run's report and JSON.

IP literals and a given prefix need no DNS server, and `run -- true` connects nowhere, so
these run offline and fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli

RESOLVE_KEYS = {"qname", "chain", "prefix", "from_cache", "records"}
RECORD_KEYS = {"address", "synthesized", "ttl", "kind", "strict_nat64_refuses"}


def test_resolve_json_of_an_ipv4_literal_rfc6052_2_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["resolve", "192.0.2.33", "--nat64-prefix", "2001:db8:100::/40", "--json"], capsys
    )
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == RESOLVE_KEYS
    assert data["prefix"] == "2001:db8:100::/40"
    [record] = data["records"]
    assert set(record) == RECORD_KEYS
    # RFC 6052 §2.4 example: 192.0.2.33 under a /40
    assert record == {"address": "2001:db8:1c0:2:21::", "synthesized": True, "ttl": 0,
                      "kind": "synthesized", "strict_nat64_refuses": False}  # fmt: skip


def test_resolve_table_columns_line_up(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["resolve", "[2001:db8::10]", "--nat64-prefix", "64:ff9b::/96"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == ["name    2001:db8::10", "chain   (none)", "prefix  64:ff9b::/96"]
    header, row = lines[4], lines[5]
    assert header.split() == ["ADDRESS", "KIND", "TTL"]
    assert row.split() == ["2001:db8::10", "native", "0"]
    assert header.index("KIND") == row.index("native")
    assert header.index("TTL") == row.rindex("0")


def test_resolve_rfc6052_3_1_private_literal_is_embedded_and_marked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under the WKP a private IPv4 is embedded (the translator decides, RFC 6052 §3.1);
    JSON and table say a strict NAT64 would refuse it."""
    code, out, err = run_cli(
        ["resolve", "10.1.2.3", "--nat64-prefix", "64:ff9b::/96", "--json"], capsys
    )
    assert (code, err) == (0, "")
    [record] = json.loads(out)["records"]
    assert record["address"] == "64:ff9b::a01:203" and record["strict_nat64_refuses"] is True
    code, out, err = run_cli(["resolve", "10.1.2.3", "--nat64-prefix", "64:ff9b::/96"], capsys)
    assert code == 0
    assert out.splitlines()[-1] == (
        "note: a strict NAT64 (RFC 6052 §3.1, tayga >= 0.9.4) refuses 64:ff9b::a01:203 under "
        "64:ff9b::/96; this network's NAT64 may carry it"
    )
    code, out, err = run_cli(
        ["resolve", "100.128.0.1", "--nat64-prefix", "64:ff9b::/96", "--json"], capsys
    )
    assert json.loads(out)["records"][0]["strict_nat64_refuses"] is False


def test_run_report_json_keys_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r.json"
    argv = ["run", "--nat64-prefix", "2001:db8:64::/96", "--egress", "embedded"]
    code, out, err = run_cli([*argv, "--report", str(report), "--", "true"], capsys)
    assert code == 0
    assert out == ""
    text = report.read_text()
    assert text.endswith("}\n")
    data = json.loads(text)
    assert set(data) == {
        "version", "mode", "command", "status", "nat64_prefix", "gate", "summary",
        "destinations", "a_lookups",
    }  # fmt: skip
    assert data["version"] == 2
    assert (data["mode"], data["command"], data["status"]) == ("run", ["true"], 0)
    assert set(data["summary"]) == {
        "destinations", "ipv4_only", "native_ipv6", "connections", "failures", "verdicts"
    }  # fmt: skip
    assert data["destinations"] == []
    lines = err.splitlines()
    assert lines[0].startswith("proxy64: SOCKS5 127.0.0.1:")
    assert lines[0].endswith("NAT64 prefix 2001:db8:64::/96 (given), egress embedded")
    assert lines[1:] == [
        "proxy64 readiness report",
        "DESTINATION  REACHED  EGRESS  CONNS  FAILED  UP  DOWN  VERDICT",
        "0 destinations, 0 IPv4-only (reached through NAT64), 0 connections, 0 failed",
        "true exited with status 0",
    ]
