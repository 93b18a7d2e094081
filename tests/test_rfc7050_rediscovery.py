"""RFC 7050 re-discovery while `proxy64 serve` runs: the network's DNS64 changes its prefix
(Unbound restarted with another dns64-prefix) and proxy64 follows without a restart once
the TTL of the ipv4only.arpa answer (2 s here, from the authoritative NSD) runs out.

Real DNS on loopback (NSD, Unbound), not root. No NAT64 here: the dial to 192.0.2.1 fails,
and its log line names the address proxy64 dialed, which shows the prefix it used.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.helpers.dnsservers import DnsProcess, start_nsd, start_unbound_dns64
from tests.helpers.proxy_process import ProxyProcess, proxy_process
from tests.helpers.requirements import require_tool

SHORT_TTL_ZONE = """; RFC 7050 §2.2 well-known name, answers valid for 2 seconds
$ORIGIN ipv4only.arpa.
$TTL 2
@ 2 IN SOA ns.ipv4only.arpa. hostmaster.ipv4only.arpa. 1 3600 600 86400 2
@ 2 IN NS  ns
ns 2 IN A  192.0.0.170
@ 2 IN A   192.0.0.170
@ 2 IN A   192.0.0.171
"""
FIRST = "2001:db8:a::/96"
SECOND = "2001:db8:b::/96"
WAIT = 15.0


@pytest.fixture
def nsd() -> Iterator[DnsProcess]:
    with start_nsd({"ipv4only.arpa.": SHORT_TTL_ZONE}) as server:
        yield server


def wait_for_log(proxy: ProxyProcess, pattern: str) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = re.search(pattern, proxy.output())
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no log line matching {pattern!r}:\n{proxy.output()}")


def test_rfc7050_3_the_proxy_follows_a_dns64_whose_prefix_changes(nsd: DnsProcess) -> None:
    require_tool("curl")
    unbound = start_unbound_dns64(FIRST, nsd.address)
    host, port = str(unbound.address.host), unbound.address.port
    try:
        with proxy_process("--dns", str(unbound.address), "--http", "off") as proxy:
            assert (proxy.prefix, proxy.egress) == (FIRST, "nat64")
            assert proxy.why == f"RFC 7050 via {unbound.address}"
            unbound.stop()  # the network's DNS64 is reconfigured ...
            unbound = start_unbound_dns64(SECOND, nsd.address, host=host, port=port)
            wait_for_log(
                proxy,
                rf"NAT64 prefix changed: {FIRST} \(egress nat64\) -> {SECOND} "
                rf"\(RFC 7050 via {re.escape(str(unbound.address))}\), egress nat64",
            )
            assert proxy.process.poll() is None  # ... and no restart was needed
            curl = shutil.which("curl")
            assert curl is not None
            subprocess.run(
                [curl, "-s", "--max-time", "8", "--socks5", proxy.socks_url.split("//")[1],
                 "http://192.0.2.1/"],
                capture_output=True, timeout=15, check=False,
            )  # fmt: skip
            line = wait_for_log(proxy, r"socks5 \S+ → 192\.0\.2\.1:80 .*")
            assert "[2001:db8:b::c000:201]:80" in line, line  # a new connection: new prefix
            assert proxy.output().count("NAT64 prefix changed") == 1
    finally:
        unbound.stop()
