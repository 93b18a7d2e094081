"""The addresses of the NAT64 test network, shared by tests/network and the compose demo.

Pure constants (no I/O), so tests/test_compose.py can check compose.yaml against them
without root. The picture is in docs/nat64-network.md ("How it reaches IPv4"):

  client (IPv6 only)  --veth--  gateway (dual stack: tayga, NSD, Unbound, IPv6 origin)
                                   |  nat64 TUN: PREFIX <-> DYNAMIC_POOL
                                 --veth--  origin (IPv4 only: HTTP, UDP echo)

Why these addresses: under the well-known prefix tayga (and RFC 6052 §3.1) refuse
RFC 1918, TEST-NET and 198.18/15 destinations, so the main origin needs a global-looking
IPv4 address. 100.200.0.0/16 lies outside 100.64.0.0/10 (RFC 6598) and is global by the
RFC 6890 registry; no packet can leave because every veth end sits in a namespace the
tests create. The origin also answers on two addresses real networks use for IPv4
services: PRIVATE_ORIGIN4 (RFC 1918), which Debian's tayga 0.9.2 refuses under the
well-known prefix, and SHARED_ORIGIN4 (RFC 6598), which it translates (tayga >= 0.9.4
with wkpf-strict would refuse both).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

# --- client <-> gateway (IPv6 only) ---------------------------------------------------
CLIENT_NET6 = IPv6Network("fd64:c::/64")
CLIENT6 = IPv6Address("fd64:c::2")  # proxy64 and curl run here
GATEWAY6 = IPv6Address("fd64:c::1")  # the client's default route, tayga's IPv6 side
NSD6 = IPv6Address("fd64:c::53")  # authoritative DNS (NSD) on the gateway
UNBOUND6 = IPv6Address("fd64:c::64")  # the network's DNS64 (Unbound) on the gateway
ORIGIN6 = IPv6Address("fd64:c::80")  # IPv6 origin (native AAAA) on the gateway
DEAD_DNS6 = IPv6Address("fd64:c::99")  # on the gateway, nothing listens: "DNS down"

# --- gateway <-> origin (IPv4 only) ----------------------------------------------------
ORIGIN_NET4 = IPv4Network("100.200.0.0/24")
GATEWAY4 = IPv4Address("100.200.0.1")
ORIGIN4 = IPv4Address("100.200.0.10")
PRIVATE_ORIGIN4 = IPv4Address("10.64.0.10")  # also on the origin; RFC 1918
SHARED_ORIGIN4 = IPv4Address("100.64.0.10")  # also on the origin; RFC 6598 shared space

# --- tayga ---------------------------------------------------------------------------
TAYGA_IPV4 = IPv4Address("100.201.0.1")  # tayga's own IPv4 (ICMP errors come from it)
DYNAMIC_POOL = IPv4Network("100.201.0.0/24")  # IPv6 clients appear as these to the origin
TUN_DEVICE = "nat64"
WELL_KNOWN_PREFIX = IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1
# Network-specific prefixes, one per RFC 6052 §2.2 length; none covers CLIENT_NET6 and
# none is the RFC 8215 local-use prefix tayga rejects.
NETWORK_SPECIFIC_PREFIXES = {
    32: IPv6Network("fd00:6432::/32"),
    40: IPv6Network("fd00:6440:4000::/40"),
    48: IPv6Network("fd00:6448:48::/48"),
    56: IPv6Network("fd00:6456:56:5600::/56"),
    64: IPv6Network("fd00:6464:64:64::/64"),
    96: IPv6Network("fd00:6496:96:96::/96"),
}

# --- services --------------------------------------------------------------------------
HTTP_PORT = 80
UDP_ECHO_PORT = 7
REFUSED_PORT = 81  # nothing listens: the origin answers RST
SOCKS_PORT = 1080
PROXY_HTTP_PORT = 8080
ZONE = "nat64.test."

# Names in the test zone (docker/dns/nat64.test.zone) and what they hold.
V4ONLY = "v4only.nat64.test"  # A ORIGIN4 only
CNAME_CHAIN = "alias.nat64.test"  # CNAME alias2 -> CNAME v4only
DUAL = "dual.nat64.test"  # A ORIGIN4 and AAAA ORIGIN6 (native)
V6ONLY = "v6only.nat64.test"  # AAAA ORIGIN6 only
PRIVATE = "private.nat64.test"  # A PRIVATE_ORIGIN4
SHARED = "shared.nat64.test"  # A SHARED_ORIGIN4
MAPPED = "mapped.nat64.test"  # AAAA ::ffff:ORIGIN4 and A ORIGIN4 (RFC 6147 §5.1.4)
MULTI = "multi.nat64.test"  # two A records
TXTONLY = "txtonly.nat64.test"  # TXT only: NODATA for A and AAAA
MISSING = "missing.nat64.test"  # NXDOMAIN
