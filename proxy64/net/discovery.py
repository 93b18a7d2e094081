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

from proxy64.config import HostPort, ResolverSettings
from proxy64.defaults import (
    DISCOVERY_TIMEOUT,
    DNS_TIMEOUT,
    IPV4ONLY_ARPA,
    PROBE_TIMEOUT,
    WELL_KNOWN_PREFIX,
)
from proxy64.errors import ResolutionError
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
        return []
    _, _, rrset = follow_chain(response, _IPV4ONLY, dns.rdatatype.AAAA)
    if rrset is None:
        return []
    prefixes = derive_prefixes(IPv6Address(rdata.address) for rdata in rrset)
    log.debug("RFC 7050 discovery: %s", ", ".join(map(str, prefixes)) or "no NAT64 prefix")
    return prefixes


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


async def prefix_for(settings: ResolverSettings) -> tuple[Nat64Prefix, str | None]:
    """The prefix to synthesize with: the configured one, or RFC 7050 discovery ("auto").

    When discovery finds nothing (or no DNS server answers) the well-known prefix is used,
    and the second value is the one line that says so; several found: the first is used.
    """
    if settings.prefix is not None:
        return settings.prefix, None
    servers = settings.servers or servers_from_resolv_conf()
    via = ", ".join(map(str, servers))
    fallback = Nat64Prefix.from_network(WELL_KNOWN_PREFIX)
    try:
        found = await discover_prefixes(servers)
    except ResolutionError as exc:
        return fallback, f"NAT64 prefix discovery failed ({exc}); using {fallback}"
    if not found:
        return fallback, f"no NAT64 prefix found via DNS {via}; using {fallback}"
    return found[0], None
