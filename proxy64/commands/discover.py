"""`proxy64 discover`: find the network's NAT64 prefix with RFC 7050 (ipv4only.arpa).

Exit 0 when at least one prefix was found (and, with --probe, at least one answered),
1 when none was found, no DNS server answered, or every probe failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from proxy64.commands.common import checked
from proxy64.config import HostPort, parse_dns_server, parse_host_port
from proxy64.errors import ResolutionError
from proxy64.net.discovery import discover_prefixes, probe_prefix
from proxy64.net.resolver import servers_from_resolv_conf

EXIT_NOT_FOUND = 1


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "discover",
        help="discover the NAT64 prefix of this network (RFC 7050)",
        description=(
            "Ask the DNS servers for the AAAA records of ipv4only.arpa (RFC 7050) and derive "
            "the NAT64 prefixes a DNS64 synthesizes them with. Exit status 0 when a prefix "
            "was found, 1 when none was, or no DNS server answered."
        ),
    )
    parser.add_argument(
        "--dns",
        metavar="ADDR",
        action="append",
        type=checked("--dns", parse_dns_server),
        default=[],
        help="DNS server HOST[:PORT] or [IPv6][:PORT], repeatable, tried in order "
        "(default: the nameservers of /etc/resolv.conf)",
    )
    parser.add_argument(
        "--probe",
        metavar="HOST:PORT",
        type=checked("--probe", parse_host_port),
        default=None,
        help="also check each prefix works: dial the IPv4 address HOST embedded in it over "
        "TCP (RFC 7050 §3 connectivity check; off by default)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    servers: tuple[HostPort, ...] = tuple(args.dns) or servers_from_resolv_conf()
    return trio.run(_discover, servers, args.probe, args.json)


async def _discover(servers: tuple[HostPort, ...], probe: HostPort | None, as_json: bool) -> int:
    via = ", ".join(map(str, servers))
    result: dict[str, Any] = {"servers": [str(s) for s in servers], "prefixes": []}
    try:
        prefixes = await discover_prefixes(servers)
    except ResolutionError as exc:
        result["error"] = str(exc)
        _emit(result, as_json, [])
        sys.stderr.write(f"proxy64 discover: {exc}\n")
        return EXIT_NOT_FOUND
    result["prefixes"] = [str(p) for p in prefixes]
    lines = [f"NAT64 prefix {p} (via DNS {via})" for p in prefixes]
    working = len(prefixes)
    if probe is not None and prefixes:
        result["probe"] = {"target": str(probe), "results": {}}
        working = 0
        for prefix in prefixes:
            problem = await probe_prefix(prefix, probe)
            result["probe"]["results"][str(prefix)] = problem or "ok"
            working += problem is None
            lines.append(f"probe {prefix} via {probe}: {problem or 'ok'}")
    _emit(result, as_json, lines)
    if not prefixes:
        sys.stderr.write(f"proxy64 discover: no NAT64 prefix found via DNS {via}\n")
        return EXIT_NOT_FOUND
    if working == 0:
        sys.stderr.write(f"proxy64 discover: no prefix passed the probe to {probe}\n")
        return EXIT_NOT_FOUND
    return 0


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    elif lines:
        print("\n".join(lines))
