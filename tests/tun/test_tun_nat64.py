"""TUN mode through a real NAT64: proxy64 runs in the test network's IPv6-only client
namespace (tests/network: tayga, NSD, an IPv4-only origin), `tun run` puts curl in a
sandbox below it, and the origin sees the connection coming from tayga's pool.

This is the "network NAT64" egress; the other TUN tests use the embedded egress.
"""

from __future__ import annotations

import pytest

from tests.network import topology as T
from tests.network.clients import NSD, assert_through_tayga
from tests.network.conftest import netlab  # noqa: F401  (the session's test network)
from tests.network.netlab import Netlab
from tests.network.proxy import run_proxy64_in

pytestmark = pytest.mark.network


def test_tun_run_through_network_nat64_tayga(netlab: Netlab) -> None:  # noqa: F811
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    done = run_proxy64_in(
        netlab, "tun", "run", "--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX),
        "--egress", "nat64", "--", "curl", "-sS", "-m", "10", f"http://{T.V4ONLY}/tun",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_through_tayga(done.stdout)  # tayga translated it: the NAT64 egress was used
    assert f"{T.V4ONLY}:80" in done.stderr  # the report names what curl resolved
    assert "dns64-synthesized" in done.stderr and "nat64" in done.stderr


def test_tun_run_rfc6052_3_1_private_ipv4_is_not_synthesized(netlab: Netlab) -> None:  # noqa: F811
    # Under 64:ff9b::/96 a private IPv4 must not be embedded (RFC 6052 §3.1): the DNS64
    # gives no AAAA, only the A record remains, and with no IPv4 in the sandbox the app
    # fails at once ("network unreachable"), instead of hanging on a refused translation.
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    script = f"dig +short AAAA {T.PRIVATE}; echo ---; curl -sS -m 10 http://{T.PRIVATE}/"
    done = run_proxy64_in(
        netlab, "tun", "run", "--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX),
        "--egress", "nat64", "--", "sh", "-c", script,
    )  # fmt: skip
    aaaa, _ = done.stdout.split("---")
    assert aaaa.strip() == ""  # nothing synthesized
    assert done.returncode == 7, done.stderr  # curl: could not connect, at once
    # curl's AF_INET socket to the A record is the app's hidden IPv4: named, not dialed;
    # a CLAT would not help either, as a strict NAT64 refuses 10/8 under 64:ff9b::/96
    row = next(line for line in done.stderr.splitlines() if line.startswith("  10.64.0.10:80"))
    assert row.split(": ", 2)[1] == "strict-nat64-refused"
