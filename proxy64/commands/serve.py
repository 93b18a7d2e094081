"""`proxy64 serve`: the SOCKS5 + HTTP proxy with its own DNS64 resolver.

Options mirror the TOML config keys (underscored); the command line overrides the file.
A bad option or value is one line naming it and what it accepts, exit 2 (cli.py).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy64.commands.common import (
    add_log_options,
    add_metrics_option,
    add_resolver_options,
    add_rule_options,
    setup_logging,
)
from proxy64.defaults import (
    CONNECT_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CLIENT_CONNECTIONS,
    MAX_CONNECTIONS,
    SERVE_MAX_WORKERS,
)
from proxy64.serve_config import CONFIG_KEYS, ServeSettings, build_settings, load_toml

_UNSET: Any = object()


def add_serve_options(
    parser: argparse.ArgumentParser, *, listen_default: str = "", log_default: str = "info"
) -> None:
    listen = parser.add_argument_group("listeners")
    listen.add_argument(
        "--socks",
        metavar="ADDR|off",
        help="SOCKS5 listener HOST:PORT or [IPv6]:PORT (port 0: a free port), or off "
        f"(default: {listen_default or '127.0.0.1:1080'})",
    )
    listen.add_argument(
        "--http",
        metavar="ADDR|off",
        help="HTTP proxy listener HOST:PORT or [IPv6]:PORT (port 0: a free port), or off "
        f"(default: {listen_default or '127.0.0.1:8080'})",
    )
    add_resolver_options(parser)
    egress = parser.add_argument_group("egress and limits")
    egress.add_argument(
        "--egress",
        metavar="auto|nat64|embedded",
        help="nat64: dial the NAT64 IPv6 address; embedded: do the NAT64 step here and dial "
        "the IPv4 address; auto: nat64 when a NAT64 is found (RFC 7050), else embedded "
        "(default: auto)",
    )
    egress.add_argument(
        "--auth-file",
        metavar="FILE",
        help="user:password lines; clients must authenticate (RFC 1929 for SOCKS5, "
        "Proxy-Authorization: Basic for HTTP). Without it, PROXY64_AUTH=user:pass is used "
        "if set (default: no authentication)",
    )
    egress.add_argument(
        "--allow-open",
        action="store_const",
        const=True,
        help="allow a listener on a non-loopback address without authentication (default: refused)",
    )
    egress.add_argument(
        "--allow-host-access",
        action="store_const",
        const=True,
        help="let clients of a non-loopback listener reach this host (loopback, its own "
        "addresses) and link-local destinations such as cloud metadata 169.254.169.254 "
        "(default: refused with SOCKS reply 2 / HTTP 403; loopback listeners always may)",
    )
    egress.add_argument(
        "--strict-wkp",
        action="store_const",
        const=True,
        help="behave as a strict NAT64 under 64:ff9b::/96 (tayga's wkpf-strict): refuse "
        "10/8, 100.64/10, 172.16/12, 192.168/16, 198.18/15 and the TEST-NETs before "
        "dialing, to test an app against the strictest translator (default: off; the "
        "NAT64 decides, and the readiness report marks what a strict one would refuse)",
    )
    egress.add_argument(
        "--max-connections",
        metavar="N",
        help=f"client connections handled at once, per process: with --workers N each "
        f"worker has this many, N times it in all (default: {MAX_CONNECTIONS})",
    )
    egress.add_argument(
        "--max-client-connections",
        metavar="N",
        help="connections one client address may hold at once, per process, so one client "
        "cannot take every slot; beyond: SOCKS reply 0x01 / HTTP 503 for that client only "
        f"(default: {MAX_CLIENT_CONNECTIONS})",
    )
    egress.add_argument(
        "--workers",
        metavar="N",
        help=f"worker processes, 1-{SERVE_MAX_WORKERS}, each with its own SO_REUSEPORT "
        "listeners on the same ports; with N > 1 the first process supervises them and "
        "restarts one that dies (default: 1)",
    )
    egress.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        help=f"close a tunnel with no bytes either way for this long (default: {IDLE_TIMEOUT:g})",
    )
    egress.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        help=f"give up dialing a destination (all addresses) after this long "
        f"(default: {CONNECT_TIMEOUT:g})",
    )
    add_rule_options(parser)
    add_log_options(parser, default=log_default)
    add_metrics_option(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file whose keys are these option names with underscores "
        '(nat64_prefix = "auto"); options given here override it (default: none)',
    )
    # "not given" must be visible, so the config file is overridden only by given options.
    parser.set_defaults(
        dns=None,
        nat64_prefix=_UNSET,
        synthesize_all=None,
        dns64_exclude=None,
        log_level=None,
        log_format=None,
    )


def cli_values(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, by config key."""
    given: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        value = getattr(args, key, None)
        if key == "nat64_prefix":
            if value is not _UNSET:
                given[key] = value  # None here means "auto" was given
        elif value is not None and value != []:
            given[key] = value
    if getattr(args, "rules", None):
        given["rules"] = tuple(args.rules)  # --allow/--deny, in the order given
    return given


def load_settings(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
) -> ServeSettings:
    """The settings from the config file, the command line and the environment (at start
    and again on SIGHUP: the files are read each time)."""
    file_values = load_toml(Path(args.config)) if args.config else {}
    return build_settings(file_values, cli_values(args), environ, defaults)


def settings_from_args(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
) -> ServeSettings:
    settings = load_settings(args, environ, defaults)
    setup_logging(settings.log_level, settings.log_format)
    return settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the SOCKS5 and HTTP proxy",
        description="Serve SOCKS5 and HTTP proxies that resolve names with DNS64 and reach "
        "IPv4-only destinations through NAT64 (or the embedded egress). SIGHUP re-reads "
        "--config and --auth-file: new connections get the new users, access rules and log "
        "level, open tunnels are untouched, a bad file keeps the previous settings.",
    )
    add_serve_options(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from proxy64.serve_main import run_serve

    environ = dict(os.environ)
    settings = settings_from_args(args, environ)
    config = Path(args.config) if args.config else None
    return run_serve(settings, load=lambda: load_settings(args, environ), config=config)
