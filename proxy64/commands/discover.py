"""`proxy64 discover`: find the network's NAT64 prefix, from every source proxy64 knows.

The sources in the order `--nat64-prefix auto` prefers them (RFC 9872): PREF64 in
Router Advertisements (RFC 8781, heard over rtnetlink for --ra-wait seconds), PREF64
as systemd-networkd learned it (networkctl), RFC 7050 (ipv4only.arpa). Each is listed
with what it gave. Exit 0 when at least one prefix was found (and, with --probe, at
least one answered), 1 when none was found or every probe failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from proxy64.commands.common import checked
from proxy64.config import HostPort, parse_dns_server, parse_host_port
from proxy64.defaults import PREF64_STARTUP_WAIT
from proxy64.errors import ConfigError
from proxy64.net.discovery import probe_prefix
from proxy64.net.nat64_watch import Nat64Sources
from proxy64.net.resolver import servers_from_resolv_conf

EXIT_NOT_FOUND = 1
RA_WAIT_MAX = 3600.0


def parse_ra_wait(text: str, option: str = "--ra-wait") -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= RA_WAIT_MAX:
        raise ConfigError(option, f"{text!r}: give seconds from 0 to {RA_WAIT_MAX:g}")
    return seconds


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "discover",
        help="discover the NAT64 prefix of this network (PREF64, RFC 7050)",
        description=(
            "List what every source of the NAT64 prefix gives, in the order "
            "--nat64-prefix auto prefers them (RFC 9872): PREF64 in Router Advertisements "
            "(RFC 8781, heard without root over rtnetlink), PREF64 learned by "
            "systemd-networkd (networkctl), and the AAAA records of ipv4only.arpa "
            "(RFC 7050). Exit status 0 when a prefix was found, 1 when none was."
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
    parser.add_argument(
        "--ra-wait",
        metavar="SECONDS",
        type=checked("--ra-wait", parse_ra_wait),
        default=PREF64_STARTUP_WAIT,
        help="listen this long for a Router Advertisement with PREF64; routers send one "
        f"every few minutes, or when asked (default: {PREF64_STARTUP_WAIT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    servers: tuple[HostPort, ...] = tuple(args.dns) or servers_from_resolv_conf()
    return trio.run(_discover, servers, args.probe, args.json, args.ra_wait)


async def _discover(
    servers: tuple[HostPort, ...], probe: HostPort | None, as_json: bool, ra_wait: float
) -> int:
    sources = Nat64Sources(servers)
    choice = await sources.startup(ra_wait)
    reports = sources.reports()
    prefixes = list(dict.fromkeys(p for report in reports for p in report.prefixes))
    found = choice.source != "none"
    result: dict[str, Any] = {
        "servers": [str(s) for s in servers],
        "prefixes": [str(p) for p in prefixes],
        "sources": [
            {"source": r.source, "prefixes": [str(p) for p in r.prefixes], "detail": r.detail}
            for r in reports
        ],
        "chosen": {"prefix": str(choice.prefix), "why": choice.why} if found else None,
    }
    rows = [(r.source, ", ".join(map(str, r.prefixes)) or "-", r.detail) for r in reports]
    if found:
        rows.append(("chosen", str(choice.prefix), choice.why))
    working = len(prefixes)
    if probe is not None and prefixes:
        result["probe"] = {"target": str(probe), "results": {}}
        working = 0
        for prefix in prefixes:
            problem = await probe_prefix(prefix, probe)
            result["probe"]["results"][str(prefix)] = problem or "ok"
            working += problem is None
            rows.append((f"probe {probe}", str(prefix), problem or "ok"))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(rows))
    if not found:
        details = "; ".join(f"{r.source}: {r.detail}" for r in reports)
        sys.stderr.write(f"proxy64 discover: no NAT64 prefix found ({details})\n")
        return EXIT_NOT_FOUND
    if working == 0:
        sys.stderr.write(f"proxy64 discover: no prefix passed the probe to {probe}\n")
        return EXIT_NOT_FOUND
    return 0


def _table(rows: list[tuple[str, str, str]]) -> str:
    first = max(len(row[0]) for row in rows)
    second = max(len(row[1]) for row in rows)
    return "\n".join(f"{a:<{first}}  {b:<{second}}  {c}" for a, b, c in rows)
