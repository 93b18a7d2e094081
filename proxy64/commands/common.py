"""Options shared by several subcommands (DNS, NAT64 prefix, logging, readiness report)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from proxy64.config import (
    ResolverSettings,
    parse_dns_server,
    parse_network6,
    parse_prefix_choice,
)
from proxy64.defaults import EXIT_NOT_READY
from proxy64.errors import ConfigError
from proxy64.logformat import JsonFormatter, json_line
from proxy64.readiness import LEVEL_HELP, Level
from proxy64.readiness_render import FORMATS, RENDERERS, ReadinessResult, as_dict, to_table
from proxy64.report import ReadinessReport
from proxy64.rules import Action, parse_rule_line

T = TypeVar("T")


def checked(option: str, parse: Callable[[str, str], T]) -> Callable[[str], T]:
    """Wrap a config parser as an argparse type: ConfigError becomes one usage line."""

    def convert(text: str) -> T:
        try:
            return parse(text, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None

    convert.__name__ = option.lstrip("-")  # argparse names the type in messages
    return convert


def add_rule_options(parser: argparse.ArgumentParser) -> None:
    """--allow RULE / --deny RULE, repeatable, kept in the order given (one list)."""
    group = parser.add_argument_group(
        "access rules",
        "first match wins, no match allows; these come before the config file's [[rule]] "
        "tables, and both before the built-in rules that deny this host and link-local "
        "behind a non-loopback listener. RULE: space-separated fields [dest=]ADDRESS|CIDR|"
        "NAME|.SUFFIX|this-host|link-local|any, ports=PORT|LOW-HIGH[,...], "
        "client=ADDRESS|CIDR, e.g. '10.0.0.0/8 ports=1-1024' or '.example.com "
        "client=192.0.2.0/24'",
    )
    for action in Action:
        option = f"--{action.value}"
        group.add_argument(
            option,
            dest="rules",
            action="append",
            metavar="RULE",
            type=checked(option, partial(parse_rule_line, action=action)),
            help=f"{action.value} the requests RULE matches (repeatable; default: no rules)",
        )


def add_resolver_options(parser: argparse.ArgumentParser, *, default_prefix: str = "auto") -> None:
    group = parser.add_argument_group("DNS64 and NAT64")
    group.add_argument(
        "--dns",
        metavar="ADDR",
        action="append",
        type=checked("--dns", parse_dns_server),
        default=[],
        help="upstream DNS server HOST[:PORT] or [IPv6][:PORT], repeatable, tried in order "
        "(default: the nameservers of /etc/resolv.conf)",
    )
    group.add_argument(
        "--nat64-prefix",
        metavar="PREFIX|auto",
        type=checked("--nat64-prefix", parse_prefix_choice),
        default=parse_prefix_choice(default_prefix),
        help="NAT64 prefix of length /32 /40 /48 /56 /64 or /96 (RFC 6052), or 'auto': "
        "PREF64 from Router Advertisements (RFC 8781) or systemd-networkd, else RFC 7050, "
        f"followed while running (default: {default_prefix})",
    )
    group.add_argument(
        "--synthesize-all",
        action="store_true",
        help="ignore native AAAA records and synthesize from A, forcing the NAT64 path",
    )
    group.add_argument(
        "--dns64-exclude",
        metavar="NET",
        action="append",
        type=checked("--dns64-exclude", parse_network6),
        default=None,
        help="AAAA records inside NET count as absent (RFC 6147 §5.1.4; default ::ffff:0:0/96)",
    )


def resolver_settings(args: argparse.Namespace) -> ResolverSettings:
    settings = ResolverSettings(
        servers=tuple(args.dns), prefix=args.nat64_prefix, synthesize_all=args.synthesize_all
    )
    if args.dns64_exclude:
        settings = dataclasses.replace(settings, excluded=tuple(args.dns64_exclude))
    return settings


def add_log_options(parser: argparse.ArgumentParser, *, default: str = "info") -> None:
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help=f"debug, info (one line per connection), warning or error (default: {default})",
    )
    parser.add_argument(
        "--log-format",
        metavar="text|json",
        choices=["text", "json"],
        default="text",
        help="text lines, or json: one object per line with the same fields, for log "
        "shippers (default: text)",
    )


def setup_logging(level: str, log_format: str = "text") -> None:
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
        return
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="ADDR|off",
        help="serve Prometheus metrics at http://ADDR/metrics and a health check at "
        "/healthz; HOST:PORT or [IPv6]:PORT (port 0: a free port). A non-loopback address "
        "needs authentication (the proxy's credentials, HTTP Basic) or --allow-open "
        "(default: off)",
    )


def parse_report_path(text: str, option: str = "--report") -> Path:
    """A file the report can be written to, checked before the command runs (not after);
    its extension names the format (.json, .md or .xml)."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise ConfigError(option, f"{text} is a directory; give a file name such as report.json")
    if not folder.is_dir():
        raise ConfigError(option, f"cannot write {text}: the directory {folder} does not exist")
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(
            option,
            f"{text}: the extension names the format: .json (JSON), .md (Markdown summary) "
            "or .xml (JUnit XML)",
        )
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(option, f"cannot write {text}: permission denied")
    return path


def write_report(path: Path, text: str, command: str) -> bool:
    """Write one report file (one trailing newline); False, with one line on stderr, if not."""
    try:
        path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"proxy64 {command}: cannot write {path}: {exc.strerror}\n")
        return False
    return True


def parse_level(text: str, option: str = "--require") -> Level:
    try:
        return Level(text)
    except ValueError:
        names = ", ".join(level.value for level in Level)
        raise ConfigError(option, f"{text!r} is not a level; expected one of {names}") from None


def add_readiness_options(parser: argparse.ArgumentParser) -> None:
    """--report (repeatable, format by extension) and --require LEVEL: run and tun run."""
    group = parser.add_argument_group(
        "IPv6-only readiness (docs/readiness.md)",
        f"exit status: CMD's own, or {EXIT_NOT_READY} when a destination breaks --require",
    )
    group.add_argument(
        "--report",
        metavar="FILE",
        action="append",
        default=[],
        type=checked("--report", parse_report_path),
        help="also write the report to FILE, repeatable; the extension names the format: "
        ".json (schema: docs/report.schema.json), .md (Markdown, fits $GITHUB_STEP_SUMMARY), "
        ".xml (JUnit XML: one test case per destination) (default: table on stderr only)",
    )
    levels = "; ".join(f"{level.value}: {why}" for level, why in LEVEL_HELP.items())
    group.add_argument(
        "--require",
        metavar="LEVEL",
        type=checked("--require", parse_level),
        default=None,
        help=f"the level every destination must reach, else exit {EXIT_NOT_READY} and list "
        f"the destinations that broke it: {levels} (default: none, exit with CMD's status)",
    )


def finish_readiness(
    args: argparse.Namespace,
    report: ReadinessReport,
    status: int,
    command: list[str],
    mode: str,
    *,
    log_format: str = "text",
) -> int:
    """Print the table (--log-format json: one object, the --report JSON's fields), write
    every --report file; the exit status of run / tun run."""
    result = ReadinessResult.of(
        report, level=args.require, status=status, command=command, mode=mode
    )
    if log_format == "json":
        line = json_line("readiness report", event="report", **as_dict(result))
        sys.stderr.write(line + "\n")
    else:
        sys.stderr.write(to_table(result))
    written = all(
        write_report(path, RENDERERS[path.suffix.lower()](result), mode) for path in args.report
    )
    if not result.passed:
        return EXIT_NOT_READY
    return status if written else status or 1
