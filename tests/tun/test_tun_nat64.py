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


def test_tun_run_reaches_shared_space_origin_through_the_wkp(netlab: Netlab) -> None:  # noqa: F811
    """100.64.0.0/10 under 64:ff9b::/96: synthesized, dialed, carried by tayga 0.9.2; the
    report marks it as what a strict NAT64 would refuse."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    done = run_proxy64_in(
        netlab, "tun", "run", "--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX),
        "--egress", "nat64", "--", "curl", "-sS", "-m", "10", f"http://{T.SHARED}/tun",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_through_tayga(done.stdout)
    assert f"  {T.SHARED}:80: strict-nat64-refused: {T.SHARED_ORIGIN4} is not global" in (
        done.stderr
    )


# curl's time to fail, measured inside the sandbox (ms), and its exit status
TIMED_CURL = (
    's=$(date +%s%N); curl -sS -m 10 "$1"; rc=$?; e=$(date +%s%N); '
    'echo "rc=$rc ms=$(( (e - s) / 1000000 ))"'
)


def _timed(done_stdout: str) -> tuple[int, int]:
    last = done_stdout.strip().splitlines()[-1]
    fields = dict(part.split("=") for part in last.split())
    return int(fields["rc"]), int(fields["ms"])


def test_tun_run_rfc6052_3_1_private_refused_by_tayga_at_once(netlab: Netlab) -> None:  # noqa: F811
    """10.0.0.0/8 under 64:ff9b::/96: the DNS64 synthesizes it (as BIND and Unbound do),
    tayga refuses it, and the app hears it at once (ICMPv6 unreachable, curl exit 7); the
    report names the likely cause and the way out."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    script = f"dig +short AAAA {T.PRIVATE}; echo ---; " + TIMED_CURL
    done = run_proxy64_in(
        netlab, "tun", "run", "--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX),
        "--egress", "nat64", "--", "sh", "-c", script, "sh", f"http://{T.PRIVATE}/",
    )  # fmt: skip
    aaaa, _ = done.stdout.split("---")
    assert aaaa.strip() == "64:ff9b::a40:a"  # synthesized, as BIND and Unbound do
    rc, ms = _timed(done.stdout)
    assert rc == 7, done.stderr  # curl: could not connect
    assert ms < 1000, f"{ms} ms"
    assert f"the NAT64 likely refuses {T.PRIVATE_ORIGIN4} under 64:ff9b::/96" in done.stderr
    # the readiness verdict of the flow (the dialer's mark: the dial failed, no address
    # recorded): a strict NAT64 refuses it too
    row = next(ln for ln in done.stderr.splitlines() if ln.startswith("  [64:ff9b::a40:a]:80"))
    assert row.split(": ", 2)[1] == "strict-nat64-refused", done.stderr


def test_tun_run_strict_wkp_refuses_both_before_dialing(netlab: Netlab) -> None:  # noqa: F811
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    for target in (T.SHARED, T.PRIVATE):
        done = run_proxy64_in(
            netlab, "tun", "run", "--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX),
            "--egress", "nat64", "--strict-wkp", "--", "sh", "-c", TIMED_CURL, "sh",
            f"http://{target}/",
        )  # fmt: skip
        rc, ms = _timed(done.stdout)
        assert rc == 7 and ms < 1000, (rc, ms, done.stderr)
        assert "--strict-wkp: a strict NAT64 refuses" in done.stderr
