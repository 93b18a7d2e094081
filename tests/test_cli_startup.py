"""The one start-up line of `proxy64 serve`, for each way the prefix and egress are chosen.

Real DNS on loopback: NSD (not a DNS64: RFC 7050 finds nothing) and Unbound DNS64 in
front of it (RFC 7050 finds its prefix). Needs nsd and unbound, not root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dnsservers import DnsProcess, start_nsd, start_unbound_dns64
from tests.helpers.proxy_process import proxy_process

DATA = Path(__file__).parent / "data" / "dns"


@pytest.fixture(scope="module")
def nsd() -> Iterator[DnsProcess]:
    zones = {"ipv4only.arpa.": (DATA / "ipv4only.arpa.zone").read_text()}
    with start_nsd(zones) as server:
        yield server


@pytest.fixture(scope="module")
def dns64(nsd: DnsProcess) -> Iterator[DnsProcess]:
    with start_unbound_dns64("2001:db8:64::/96", nsd.address) as server:
        yield server


def only_line(output: str) -> str:
    lines = [line for line in output.splitlines() if " INFO proxy64.net.discovery" not in line]
    assert len(lines) == 1, output
    return lines[0]


def test_auto_without_nat64_falls_back_to_embedded_rfc7050(nsd: DnsProcess) -> None:
    with proxy_process("--dns", str(nsd.address)) as proxy:
        assert (proxy.prefix, proxy.egress) == ("64:ff9b::/96", "embedded")
        assert proxy.why == (
            f"none found: no RA with PREF64 within 0.5 s; no NAT64 found via DNS {nsd.address}"
        )
        only_line(proxy.output())


def test_auto_with_a_dns64_uses_the_discovered_prefix_rfc7050_3(dns64: DnsProcess) -> None:
    with proxy_process("--dns", str(dns64.address)) as proxy:
        assert (proxy.prefix, proxy.egress) == ("2001:db8:64::/96", "nat64")
        assert proxy.why == f"RFC 7050 via {dns64.address}"


def test_given_prefix_and_embedded_egress() -> None:
    with proxy_process("--nat64-prefix", "2001:db8:64::/96", "--egress", "embedded") as proxy:
        assert (proxy.prefix, proxy.egress, proxy.why) == ("2001:db8:64::/96", "embedded", "given")
    with proxy_process("--nat64-prefix", "2001:db8:64::/96") as proxy:
        assert (proxy.prefix, proxy.egress, proxy.why) == ("2001:db8:64::/96", "nat64", "given")


def test_one_listener_off_and_workers() -> None:
    argv = ("--http", "off", "--socks", "127.0.0.1:0", "--egress", "embedded", "--workers", "2")
    with proxy_process(*argv) as proxy:
        assert proxy.http is None and proxy.socks is not None
        line = proxy.startup_line
        assert line.startswith(f"proxy64: SOCKS5 127.0.0.1:{proxy.socks[1]}, HTTP off; ")
        assert line.endswith(
            "NAT64 prefix 64:ff9b::/96 (well-known; the embedded egress needs no NAT64), "
            "egress embedded; 2 workers"
        )
