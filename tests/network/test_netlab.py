"""The test network itself, before any proxy64: the topology is what the other network tests
assume (IPv6-only client, IPv4-only origin, tayga translating every RFC 6052 length,
Unbound synthesizing), and the RFC 6052 §3.1 refusal by tayga is real.
"""

from __future__ import annotations

import os
import subprocess
from ipaddress import IPv4Address, IPv6Network, ip_address

import pytest

from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.requirements import require_root, require_tool
from tests.network import topology as T
from tests.network.netlab import Netlab

ALL_PREFIXES = [T.WELL_KNOWN_PREFIX, *T.NETWORK_SPECIFIC_PREFIXES.values()]


def embed(prefix: IPv6Network, ipv4: IPv4Address | str) -> str:
    """The RFC 6052 address, without proxy64's §3.1 check: tayga is what is tested here."""
    return str(Nat64Prefix.from_network(prefix).embed(IPv4Address(ipv4)))


def addresses(lab: Netlab, netns: str, family: str) -> list[str]:
    out = lab.run(None, ["ip", "-n", netns, "-o", family, "addr", "show"]).stdout
    return [line.split()[3] for line in out.splitlines()]


def test_no_veth_end_in_the_root_namespace(netlab: Netlab) -> None:
    netlab.assert_no_root_veth()
    root_links = subprocess.run(
        ["ip", "-o", "link", "show"], check=True, capture_output=True, text=True
    )
    for netns in netlab.namespaces:
        assert netns not in root_links.stdout


def test_client_is_ipv6_only_and_origin_is_ipv4_only(netlab: Netlab) -> None:
    assert addresses(netlab, netlab.client, "-4") == ["127.0.0.1/8"]
    assert f"{T.CLIENT6}/64" in addresses(netlab, netlab.client, "-6")
    assert addresses(netlab, netlab.origin, "-6") == []
    assert f"{T.ORIGIN4}/24" in addresses(netlab, netlab.origin, "-4")


def test_client_cannot_reach_ipv4_directly(netlab: Netlab) -> None:
    result = netlab.curl(f"http://{T.ORIGIN4}/")
    assert result.returncode != 0  # no IPv4 route: only NAT64 gets there


@pytest.mark.parametrize("prefix", ALL_PREFIXES, ids=lambda p: f"len{p.prefixlen}-{p}")
def test_tayga_translates_to_origin_from_pool(netlab: Netlab, prefix: IPv6Network) -> None:
    netlab.use_prefix(prefix)
    result = netlab.curl(f"http://[{embed(prefix, T.ORIGIN4)}]/direct")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("origin=v4 peer=")
    peer = ip_address(result.stdout.split()[1].removeprefix("peer="))
    assert peer in T.DYNAMIC_POOL


def test_rfc6052_3_1_tayga_refuses_private_ipv4_under_well_known_prefix(netlab: Netlab) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    result = netlab.curl(f"http://[{embed(T.WELL_KNOWN_PREFIX, T.PRIVATE_ORIGIN4)}]/")
    assert result.returncode == 7, (result.returncode, result.stdout)  # couldn't connect


def test_rfc6052_3_1_network_specific_prefix_carries_private_ipv4(netlab: Netlab) -> None:
    prefix = T.NETWORK_SPECIFIC_PREFIXES[96]
    netlab.use_prefix(prefix)
    result = netlab.curl(f"http://[{embed(prefix, T.PRIVATE_ORIGIN4)}]/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("origin=v4 ")


@pytest.mark.parametrize("prefix", ALL_PREFIXES, ids=lambda p: f"len{p.prefixlen}-{p}")
def test_rfc7050_unbound_synthesizes_ipv4only_arpa(netlab: Netlab, prefix: IPv6Network) -> None:
    netlab.use_prefix(prefix)
    out = netlab.run(netlab.client, ["dig", "+short", "+time=2", "AAAA", "ipv4only.arpa"]).stdout
    expected = {embed(prefix, "192.0.0.170"), embed(prefix, "192.0.0.171")}
    assert {ip_address(line) for line in out.split()} == {ip_address(a) for a in expected}


def test_teardown_removes_namespaces_and_processes() -> None:
    require_root()
    require_tool("ip", "nsd")
    lab = Netlab.new()
    try:
        lab.create()
        pids = [p.pid for p in lab.processes.values()]
        assert pids
    finally:
        lab.destroy()
    listed = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout
    for netns in lab.namespaces:
        assert netns not in listed
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
