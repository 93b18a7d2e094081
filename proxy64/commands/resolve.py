"""`proxy64 resolve NAME`: one DNS64 lookup, shown as a table or JSON.

Prints the name, the CNAME/DNAME chain and each address with whether it is native or
synthesized (RFC 6147) and its TTL. Exit 0 with addresses, 1 on a DNS failure (NXDOMAIN,
NODATA, SERVFAIL, timeout) with the reason on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import trio

from proxy64.commands.common import add_resolver_options, checked, resolver_settings
from proxy64.config import ResolverSettings
from proxy64.errors import AddressMappingError, ConfigError, ResolutionError
from proxy64.net.nat64_watch import resolver_choice
from proxy64.net.resolver import DNS64Resolver, Resolution, ResolvedAddress
from proxy64.proto.rfc6052 import Nat64Prefix, strict_nat64_refuses

from .dns_options import add_mapped_option, with_mapped

EXIT_DNS_FAILURE = 1


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "resolve",
        help="look a name up through proxy64's DNS64 resolver",
        description=(
            "Resolve NAME as proxy64 does before dialing: AAAA first, else A records "
            "synthesized into the NAT64 prefix (RFC 6147). Shows the CNAME chain, each "
            "address as native or synthesized, and its TTL. An IPv4 address is shown "
            "embedded in the prefix, as proxy64 dials it. Exit status 0 when addresses "
            "were found, 1 on NXDOMAIN, NODATA, SERVFAIL or when no DNS server answered."
        ),
    )
    parser.add_argument("name", metavar="NAME", type=checked("NAME", _name), help="a DNS name")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_resolver_options(parser)
    add_mapped_option(parser)
    parser.set_defaults(func=run)


def _name(text: str, option: str) -> str:
    name = text.strip()
    if not name or name == ".":
        raise ConfigError(option, "an empty name; give a DNS name or an IP address")
    return name


def run(args: argparse.Namespace) -> int:
    settings = with_mapped(resolver_settings(args), args)
    return trio.run(_resolve, settings, args.name, args.json)


async def _resolve(settings: ResolverSettings, name: str, as_json: bool) -> int:
    choice, note = await resolver_choice(settings)
    prefix = choice.prefix
    if note:
        sys.stderr.write(f"proxy64 resolve: {note}\n")
    resolver = DNS64Resolver(settings, prefix)
    try:
        resolution = _literal(name, prefix) or await resolver.resolve(name)
    except AddressMappingError as exc:
        if as_json:  # a machine reader gets JSON for every outcome, not an empty stdout
            error = {"qname": name, "prefix": str(prefix), "error": "ADDRESS_MAPPING"}
            print(json.dumps({**error, "message": str(exc)}, indent=2))
        sys.stderr.write(f"proxy64 resolve: {exc}\n")
        return EXIT_DNS_FAILURE
    except ResolutionError as exc:
        if as_json:
            error = {"qname": exc.qname, "prefix": str(prefix), "error": exc.reason}
            print(json.dumps({**error, "message": str(exc)}, indent=2))
        sys.stderr.write(f"proxy64 resolve: {exc}\n")
        return EXIT_DNS_FAILURE
    if as_json:
        print(json.dumps(as_dict(resolution, str(prefix)), indent=2))
    else:
        print(as_table(resolution, str(prefix)))
    return 0


def _literal(name: str, prefix: Nat64Prefix) -> Resolution | None:
    """An IP address needs no DNS: IPv6 is dialed as is, IPv4 embedded in the prefix
    (RFC 6052 §2.2), as the dialer does. TTL 0: nothing to cache."""
    try:
        text = name.strip()
        if text.startswith("[") and text.endswith("]"):  # [IPv6] as in a URL; not "[::1"
            text = text[1:-1]
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv4Address):
        record = ResolvedAddress(prefix.embed(address), True, 0)
    else:
        record = ResolvedAddress(address, False, 0)
    return Resolution(qname=str(address), chain=(), records=(record,), from_cache=False)


def as_dict(resolution: Resolution, prefix: str) -> dict[str, Any]:
    return {
        "qname": resolution.qname,
        "chain": list(resolution.chain),
        "prefix": prefix,
        "from_cache": resolution.from_cache,
        "records": [
            {
                **dataclasses.asdict(r),
                "address": str(r.address),
                "kind": _kind(r.synthesized),
                "strict_nat64_refuses": _strict(r.address, prefix),
            }
            for r in resolution.records
        ],
    }


def as_table(resolution: Resolution, prefix: str) -> str:
    chain = " -> ".join((resolution.qname, *resolution.chain)) if resolution.chain else "(none)"
    rows = [(str(r.address), _kind(r.synthesized), str(r.ttl)) for r in resolution.records]
    width = max(len("ADDRESS"), *(len(row[0]) for row in rows))
    lines = [
        f"name    {resolution.qname}",
        f"chain   {chain}",
        f"prefix  {prefix}",
        "",
        f"{'ADDRESS':<{width}}  {'KIND':<11}  TTL",
    ]
    lines += [f"{address:<{width}}  {kind:<11}  {ttl}" for address, kind, ttl in rows]
    lines += [
        f"note: a strict NAT64 (RFC 6052 §3.1, tayga >= 0.9.4) refuses {r.address} under "
        f"{prefix}; this network's NAT64 may carry it"
        for r in resolution.records
        if _strict(r.address, prefix)
    ]
    return "\n".join(lines)


def _strict(address: IPv6Address, prefix: str) -> bool:
    """Whether a strict NAT64 refuses address: under 64:ff9b::/96 in a refused range."""
    nat64 = Nat64Prefix.parse(prefix)
    return (
        nat64.is_well_known
        and nat64.contains(address)
        and strict_nat64_refuses(nat64.extract(address))
    )


def _kind(synthesized: bool) -> str:
    return "synthesized" if synthesized else "native"
