"""RFC 7050 NAT64 prefix discovery over the network, and the optional connectivity probe.

Asks the DNS servers for AAAA ipv4only.arpa (with failover, like every other query) and
hands the addresses to the pure derivation in proxy64/proto/rfc7050.py. The probe
(RFC 7050 §3 "connectivity check") dials an IPv4 target embedded in a prefix; it is off
unless the caller asks for it.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

import dns.name
import dns.rcode
import dns.rdatatype
import trio

from proxy64.config import HostPort
from proxy64.defaults import (
    DISCOVERY_TIMEOUT,
    DNS_TIMEOUT,
    IPV4ONLY_ARPA,
    PROBE_TIMEOUT,
)
from proxy64.proto.dns64 import follow_chain
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.proto.rfc7050 import derive_prefixes

from .resolver import query_servers, servers_from_resolv_conf

log = logging.getLogger(__name__)

_IPV4ONLY = dns.name.from_text(IPV4ONLY_ARPA)


async def discover_prefixes(
    servers: tuple[HostPort, ...],
    *,
    timeout: float = DISCOVERY_TIMEOUT,  # noqa: ASYNC109 (the agreed public API)
) -> list[Nat64Prefix]:
    """The NAT64 prefixes the DNS64 of these servers reveals (RFC 7050 §3); [] for none.

    Empty servers means the nameservers of /etc/resolv.conf. Raises ResolutionError
    (TIMEOUT) only when no server answered at all.
    """
    prefixes, _ = await discover_with_ttl(servers, timeout=timeout)
    return prefixes


async def discover_with_ttl(
    servers: tuple[HostPort, ...],
    *,
    timeout: float = DISCOVERY_TIMEOUT,  # noqa: ASYNC109 (one bound for the whole lookup)
) -> tuple[list[Nat64Prefix], int | None]:
    """discover_prefixes() and the TTL of the ipv4only.arpa AAAA answer (None without
    one): RFC 7050 §3 asks a node to discover again when that TTL runs out."""
    chosen = servers or servers_from_resolv_conf()
    response = await query_servers(
        chosen,
        _IPV4ONLY,
        dns.rdatatype.AAAA,
        per_try=min(DNS_TIMEOUT, timeout),
        lifetime=timeout,
    )
    if response.rcode() != dns.rcode.NOERROR:
        log.debug("ipv4only.arpa AAAA: %s", dns.rcode.to_text(response.rcode()))
        return [], None
    _, _, rrset = follow_chain(response, _IPV4ONLY, dns.rdatatype.AAAA)
    if rrset is None:
        return [], None
    prefixes = derive_prefixes(IPv6Address(rdata.address) for rdata in rrset)
    log.debug("RFC 7050 discovery: %s", ", ".join(map(str, prefixes)) or "no NAT64 prefix")
    return prefixes, int(rrset.ttl)


async def probe_prefix(
    prefix: Nat64Prefix,
    target: HostPort,
    *,
    timeout: float = PROBE_TIMEOUT,  # noqa: ASYNC109 (one bound per probe, applied below)
) -> str | None:
    """Dial target's IPv4 embedded in prefix over TCP; None on success, else why it failed."""
    if not isinstance(target.host, IPv4Address):
        return f"probe target {target} must be an IPv4 address"
    address = prefix.embed(target.host)
    with trio.move_on_after(timeout), trio.socket.socket(trio.socket.AF_INET6) as sock:
        try:
            await sock.connect((str(address), target.port))
        except OSError as exc:
            return f"[{address}]:{target.port}: {exc.strerror or exc}"
        return None
    return f"[{address}]:{target.port}: no answer within {timeout:g} s"
