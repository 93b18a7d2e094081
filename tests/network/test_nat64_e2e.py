"""End to end through a real NAT64: proxy64 in the IPv6-only client namespace, tayga on the
gateway, an IPv4-only origin. curl (in the client namespace) uses proxy64's SOCKS5 and
HTTP front ends; the origin reports the peer it saw, which must be from tayga's pool.

RFC 7050 (prefix discovery through Unbound's DNS64), RFC 6052 (every prefix length),
RFC 6147 (proxy64's own synthesis from NSD answers), RFC 1928 (UDP ASSOCIATE).
Failures: test_nat64_failures.py; real apps and bulk data: test_apps_through_nat64.py.
"""

from __future__ import annotations

import json
import socket
from ipaddress import IPv6Network, ip_address

import pytest

from tests.helpers import socks5_client
from tests.helpers.proxy_process import ProxyProcess
from tests.network import topology as T
from tests.network.clients import (
    FRONT_ENDS,
    NSD,
    UNBOUND,
    assert_through_tayga,
    fetch,
    origin_report,
    socks_socket,
)
from tests.network.netlab import Netlab
from tests.network.netns import socket_in
from tests.network.proxy import proxy_in, run_proxy64_in, start_proxy_in

ALL_PREFIXES = [T.WELL_KNOWN_PREFIX, *T.NETWORK_SPECIFIC_PREFIXES.values()]
PREFIX_IDS = [f"len{p.prefixlen}-{p.network_address}" for p in ALL_PREFIXES]
TARGETS = {
    "name-A-only": T.V4ONLY,
    "ipv4-literal": str(T.ORIGIN4),
    "cname-chain": T.CNAME_CHAIN,
}


# --- reaching the IPv4-only origin ---------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_reaches_ipv4_only_origin_through_tayga(
    netlab: Netlab, wkp: ProxyProcess, front_end: str, target: str
) -> None:
    body = fetch(netlab, wkp, front_end, f"http://{target}/{front_end}")
    assert_through_tayga(body)
    assert f"path=/{front_end}" in body


@pytest.mark.parametrize("prefix", ALL_PREFIXES, ids=PREFIX_IDS)
def test_rfc7050_prefix_discovered_through_network_dns64(
    netlab: Netlab, prefix: IPv6Network
) -> None:
    """--nat64-prefix auto, DNS from the namespace's resolv.conf (Unbound's DNS64)."""
    netlab.use_prefix(prefix)
    with proxy_in(netlab, "--nat64-prefix", "auto", "--egress", "auto") as proxy:
        assert IPv6Network(proxy.prefix) == prefix, proxy.startup_line
        assert proxy.egress == "nat64"
        assert "RFC 7050" in proxy.why
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.V4ONLY}/auto"))
        assert_through_tayga(fetch(netlab, proxy, "http-forward", f"http://{T.ORIGIN4}/lit"))


@pytest.mark.parametrize("prefix", ALL_PREFIXES, ids=PREFIX_IDS)
def test_rfc6052_configured_prefix_with_own_dns64(netlab: Netlab, prefix: IPv6Network) -> None:
    """proxy64 synthesizes from NSD's A records with the prefix given by hand."""
    netlab.use_prefix(prefix)
    args = ("--dns", NSD, "--nat64-prefix", str(prefix), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        assert IPv6Network(proxy.prefix) == prefix
        assert_through_tayga(fetch(netlab, proxy, "http-connect", f"http://{T.V4ONLY}/own"))
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.CNAME_CHAIN}/own"))
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.ORIGIN4}/own"))


def test_rfc6052_3_1_network_specific_prefix_reaches_private_ipv4(netlab: Netlab) -> None:
    """What the well-known prefix must refuse, a network-specific prefix carries."""
    prefix = T.NETWORK_SPECIFIC_PREFIXES[96]
    netlab.use_prefix(prefix)
    args = ("--dns", NSD, "--nat64-prefix", str(prefix), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.PRIVATE}/nsp"))


# --- native IPv6 and --synthesize-all ------------------------------------------------------


def test_native_aaaa_goes_native(netlab: Netlab, wkp: ProxyProcess) -> None:
    label, peer = origin_report(fetch(netlab, wkp, "socks5h", f"http://{T.DUAL}/native"))
    assert (label, ip_address(peer)) == ("v6", T.CLIENT6)  # no translation on the way


def test_synthesize_all_forces_nat64_for_native_aaaa(netlab: Netlab) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    args = ("--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX), "--synthesize-all")
    with proxy_in(netlab, *args, "--egress", "nat64") as proxy:
        for front_end in FRONT_ENDS:
            assert_through_tayga(fetch(netlab, proxy, front_end, f"http://{T.DUAL}/all"))


# --- UDP ASSOCIATE ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [str(T.ORIGIN4), T.V4ONLY], ids=["ipv4-literal", "name"])
def test_udp_associate_echo_through_tayga(netlab: Netlab, wkp: ProxyProcess, target: str) -> None:
    with socks_socket(netlab, wkp) as control:
        relay_host, relay_port = socks5_client.udp_associate(control)
        assert wkp.socks is not None
        if ip_address(relay_host).is_unspecified:  # RFC 1928 §6: "the same address"
            relay_host = wkp.socks[0]
        family = socket.AF_INET6 if ":" in relay_host else socket.AF_INET
        with socket_in(netlab.client, family, socket.SOCK_DGRAM) as udp:
            udp.settimeout(socks5_client.TIMEOUT)
            for size in (1, 512, 1200):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                udp.sendto(
                    socks5_client.udp_datagram(target, T.UDP_ECHO_PORT, payload),
                    (relay_host, relay_port),
                )
                reply, _ = udp.recvfrom(65535)
                host, port, data = socks5_client.parse_udp_datagram(reply)
                assert data == payload
                assert port == T.UDP_ECHO_PORT
                assert host == target  # RFC 1928 §7 header names the source as addressed


# --- discover, and the embedded fallback -----------------------------------------------------


def test_discover_prints_the_prefix(netlab: Netlab) -> None:
    prefix = T.NETWORK_SPECIFIC_PREFIXES[48]
    netlab.use_prefix(prefix)
    result = run_proxy64_in(netlab, "discover")  # resolv.conf: the network's DNS64
    assert result.returncode == 0, result.stderr
    assert str(prefix) in result.stdout
    as_json = run_proxy64_in(netlab, "discover", "--dns", UNBOUND, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert str(prefix) in json.dumps(json.loads(as_json.stdout))


def test_discover_without_dns64_says_none_and_serve_falls_back_to_embedded(
    netlab: Netlab,
) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    result = run_proxy64_in(netlab, "discover", "--dns", NSD)  # no DNS64: no synthesis
    assert result.returncode != 0
    assert "no NAT64 prefix found" in result.stdout + result.stderr
    proxy = start_proxy_in(netlab, "--dns", NSD, "--nat64-prefix", "auto", "--egress", "auto")
    try:
        assert proxy.egress == "embedded", proxy.startup_line
        assert "no NAT64 found" in proxy.why
        assert IPv6Network(proxy.prefix) == T.WELL_KNOWN_PREFIX
    finally:
        proxy.stop()
