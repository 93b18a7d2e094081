"""`proxy64 resolve`, `discover` and `dns64` run as real processes against NSD and Unbound."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.commands.dns_options import parse_network4
from proxy64.errors import ConfigError
from tests.helpers.dnsservers import (
    DnsProcess,
    free_port,
    start_nsd,
    start_unbound_dns64,
    unique_loopback,
)
from tests.helpers.requirements import require_tool, tool_path

DATA = Path(__file__).parent.parent / "data" / "dns"
NSP = "2001:db8:100::/40"
TIMEOUT = 30


@pytest.fixture(scope="module")
def nsd() -> Iterator[DnsProcess]:
    zones = {
        "dns64.test.": (DATA / "dns64.test.zone").read_text(),
        "ipv4only.arpa.": (DATA / "ipv4only.arpa.zone").read_text(),
    }
    with start_nsd(zones) as server:
        yield server


@pytest.fixture(scope="module")
def unbound(nsd: DnsProcess) -> Iterator[DnsProcess]:
    with start_unbound_dns64(NSP, nsd.address, probe_zone="dns64.test.") as server:
        yield server


def proxy64(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy64", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_resolve_table(nsd: DnsProcess) -> None:
    done = proxy64("resolve", "alias2.dns64.test", "--dns", str(nsd.address), "--nat64-prefix", NSP)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["name", "alias2.dns64.test"]
    assert lines[1].split() == [
        "chain",
        "alias2.dns64.test",
        "->",
        "alias.dns64.test",
        "->",
        "a-only.dns64.test",
    ]
    assert lines[2].split() == ["prefix", NSP]
    assert lines[4].split() == ["ADDRESS", "KIND", "TTL"]
    # RFC 6147 §5.1.7: min(A TTL 3600, negative SOA TTL 300)
    assert lines[5].split() == ["2001:db8:101:203:4::", "synthesized", "300"]


def test_resolve_json_native_and_synthesized(nsd: DnsProcess) -> None:
    done = proxy64(
        "resolve", "both.dns64.test", "--dns", str(nsd.address), "--nat64-prefix", NSP, "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["qname"] == "both.dns64.test" and result["chain"] == []
    assert result["records"] == [
        {
            "address": "2001:db8:1::2",
            "synthesized": False,
            "ttl": 1800,
            "kind": "native",
            "strict_nat64_refuses": False,
        }
    ]
    forced = proxy64(
        "resolve",
        "both.dns64.test",
        "--dns",
        str(nsd.address),
        "--nat64-prefix",
        NSP,
        "--synthesize-all",
        "--json",
    )
    records = json.loads(forced.stdout)["records"]
    assert records == [
        {
            "address": "2001:db8:101:203:5::",
            "synthesized": True,
            "ttl": 600,
            "kind": "synthesized",
            "strict_nat64_refuses": False,
        }
    ]


def test_resolve_failure_exit_1(nsd: DnsProcess) -> None:
    done = proxy64(
        "resolve", "missing.dns64.test", "--dns", str(nsd.address), "--nat64-prefix", NSP
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "proxy64 resolve: DNS NXDOMAIN: the name missing.dns64.test does not exist"
    )
    private = proxy64(
        "resolve",
        "private.dns64.test",
        "--dns",
        str(nsd.address),
        "--json",
        "--nat64-prefix",
        "64:ff9b::/96",
    )
    # RFC 6052 §3.1 is the translator's rule: the DNS64 synthesizes it, as BIND does, and
    # marks it as what a strict NAT64 refuses.
    assert private.returncode == 0, private.stderr
    [record] = json.loads(private.stdout)["records"]
    assert record["address"] == "64:ff9b::a01:203" and record["strict_nat64_refuses"] is True


def test_resolve_auto_without_dns64_falls_back_to_wkp(nsd: DnsProcess) -> None:
    done = proxy64("resolve", "a-only.dns64.test", "--dns", str(nsd.address), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("proxy64 resolve: no NAT64 prefix found (")
    assert done.stderr.endswith(f"; no NAT64 found via DNS {nsd.address}); using 64:ff9b::/96\n")
    assert len(done.stderr.splitlines()) == 1
    assert json.loads(done.stdout)["records"][0]["address"] == "64:ff9b::102:304"


def test_resolve_auto_discovers_the_dns64_prefix(unbound: DnsProcess) -> None:
    done = proxy64("resolve", "aaaa-only.dns64.test", "--dns", str(unbound.address), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["prefix"] == NSP


def test_discover_found(unbound: DnsProcess) -> None:
    done = proxy64("discover", "--dns", str(unbound.address))
    assert done.returncode == 0, done.stderr
    rows = [line.split(None, 2) for line in done.stdout.replace("PREF64 (RA)", "RA").splitlines()]
    assert [row[0] for row in rows] == ["RA", "systemd-networkd", "RFC", "chosen"]
    assert done.stdout.splitlines()[2].split()[:3] == ["RFC", "7050", NSP]
    assert f"via {unbound.address}, TTL " in done.stdout.splitlines()[2]
    assert rows[3][1:] == [NSP, f"RFC 7050 via {unbound.address}"]
    as_json = json.loads(proxy64("discover", "--dns", str(unbound.address), "--json").stdout)
    assert as_json["servers"] == [str(unbound.address)]
    assert as_json["prefixes"] == [NSP]
    assert as_json["chosen"] == {"prefix": NSP, "why": f"RFC 7050 via {unbound.address}"}
    sources = {entry["source"]: entry for entry in as_json["sources"]}
    assert list(sources) == ["PREF64 (RA)", "systemd-networkd", "RFC 7050"]
    assert sources["RFC 7050"]["prefixes"] == [NSP]
    assert sources["PREF64 (RA)"]["prefixes"] == []  # no router announces one here


def test_discover_none_found(nsd: DnsProcess) -> None:
    done = proxy64("discover", "--dns", str(nsd.address))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "PREF64 (RA)", "systemd-networkd", "RFC 7050"
    ]  # fmt: skip
    expected = f"RFC 7050 - no NAT64 found via DNS {nsd.address}"
    assert lines[2].split() == expected.split()
    assert done.stderr.startswith("proxy64 discover: no NAT64 prefix found (PREF64 (RA): ")
    assert done.stderr.strip().endswith(f"RFC 7050: no NAT64 found via DNS {nsd.address})")


def test_bad_prefix_is_a_usage_error() -> None:
    done = proxy64("resolve", "x.test", "--nat64-prefix", "2001:db8::/33")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "/33" in done.stderr


def _start_dns64(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy64", "dns64", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = ""
    for _ in range(20):  # log lines may come first; stop at the command's own line or EOF
        line = process.stderr.readline()
        if not line or line.startswith("proxy64 dns64:"):
            break
    return process, line


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop by PID: TERM, then KILL; communicate() drains and closes the pipes."""
    if process.poll() is None:
        process.terminate()
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=5)


def test_dns64_serves_dig(nsd: DnsProcess) -> None:
    require_tool("dig")
    host = unique_loopback()
    port = free_port(host)
    process, line = _start_dns64(
        "--listen", f"{host}:{port}", "--dns", str(nsd.address), "--nat64-prefix", NSP
    )
    try:
        assert line.startswith(f"proxy64 dns64: serving on {host}:{port} (UDP and TCP)"), line
        deadline = time.monotonic() + TIMEOUT
        for transport in ("+notcp", "+tcp"):
            dig = subprocess.run(
                [
                    tool_path("dig"),
                    f"@{host}",
                    "-p",
                    str(port),
                    "AAAA",
                    "a-only.dns64.test",
                    "+short",
                    "+time=2",
                    "+tries=1",
                    transport,
                ],
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
            assert dig.stdout.strip() == "2001:db8:101:203:4::", dig
        ptr = subprocess.run(
            [
                tool_path("dig"),
                f"@{host}",
                "-p",
                str(port),
                "-x",
                "2001:db8:101:203:4::",
                "+time=2",
                "+tries=1",
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert "4.3.2.1.in-addr.arpa." in ptr.stdout and "CNAME" in ptr.stdout
        process.terminate()
        assert process.wait(timeout=10) == 0  # SIGTERM: a clean stop
    finally:
        _stop(process)


def test_dns64_cannot_listen(nsd: DnsProcess) -> None:
    host = unique_loopback()
    with start_nsd(
        {"ipv4only.arpa.": (DATA / "ipv4only.arpa.zone").read_text()}, host=host
    ) as busy:
        process, line = _start_dns64(
            "--listen", f"{host}:{busy.port}", "--dns", str(nsd.address), "--nat64-prefix", NSP
        )
        try:
            assert process.wait(timeout=TIMEOUT) == 1
            assert line.startswith(f"proxy64 dns64: cannot listen on {host}:{busy.port}"), line
        finally:
            _stop(process)


@given(st.text(max_size=40))
def test_parse_network4_only_config_error(text: str) -> None:
    try:
        network = parse_network4(text, "--dns64-mapped")
    except ConfigError as exc:
        assert exc.option == "--dns64-mapped" and "192.0.2.0/24" in exc.problem
    else:
        assert network.version == 4


def test_mapped_option_limits_synthesis(nsd: DnsProcess) -> None:
    done = proxy64(
        "resolve",
        "mixed.dns64.test",
        "--dns",
        str(nsd.address),
        "--nat64-prefix",
        NSP,
        "--dns64-mapped",
        "1.0.0.0/8",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert [r["address"] for r in json.loads(done.stdout)["records"]] == ["2001:db8:101:203:6::"]
    bad = proxy64("resolve", "x.test", "--dns64-mapped", "2001:db8::/32")
    assert bad.returncode == 2 and "--dns64-mapped" in bad.stderr


def test_resolve_ip_literals_need_no_dns() -> None:
    dead = "127.0.0.1:9"  # never asked: literals are not looked up
    v4 = proxy64("resolve", "192.0.2.33", "--dns", dead, "--nat64-prefix", NSP, "--json")
    assert v4.returncode == 0, v4.stderr
    assert json.loads(v4.stdout)["records"] == [
        {
            "address": "2001:db8:1c0:2:21::",
            "synthesized": True,
            "ttl": 0,
            "kind": "synthesized",
            "strict_nat64_refuses": False,
        }
    ]
    v6 = proxy64("resolve", "[2001:db8::1]", "--dns", dead, "--nat64-prefix", NSP, "--json")
    assert json.loads(v6.stdout)["records"][0]["address"] == "2001:db8::1"
    private = proxy64("resolve", "10.1.2.3", "--dns", dead, "--nat64-prefix", "64:ff9b::/96")
    assert private.returncode == 0 and "64:ff9b::a01:203" in private.stdout
    assert "a strict NAT64 (RFC 6052 §3.1" in private.stdout
