"""`proxy64 run [serve options] [--report FILE.json] -- CMD [ARGS]`: one app through proxy64.

Starts the proxy on free loopback ports, runs CMD with http_proxy/https_proxy/HTTP_PROXY/
HTTPS_PROXY (http://) and ALL_PROXY/all_proxy (socks5h://) pointing at it (NO_PROXY kept
as it was), exits with CMD's status (a signal n → 128+n) and prints the readiness report
to stderr (--report writes it as JSON too).
"""

from __future__ import annotations

import argparse
import os

from proxy64.commands.common import checked, parse_report_path, print_report, write_report
from proxy64.commands.serve import add_serve_options, settings_from_args
from proxy64.errors import ConfigError

# run: free loopback ports; warnings only, so the logs do not drown the command's output
RUN_DEFAULTS = {"socks": "127.0.0.1:0", "http": "127.0.0.1:0", "log_level": "warning"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run one command through proxy64 (proxy variables set for it)",
        description="Start proxy64 on free loopback ports, run CMD with the proxy variables "
        "set, print the readiness report at exit and exit with CMD's status.",
    )
    add_serve_options(
        parser, listen_default="127.0.0.1:0, a free port", log_default=RUN_DEFAULTS["log_level"]
    )
    parser.add_argument(
        "--report",
        metavar="FILE.json",
        type=checked("--report", parse_report_path),
        help="also write the readiness report as JSON to FILE (default: table on stderr only)",
    )
    parser.add_argument(
        "cmd", metavar="-- CMD [ARGS]", nargs=argparse.REMAINDER, help="the command to run"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from proxy64.app import run_with_command

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("CMD", "no command given; usage: proxy64 run [options] -- CMD [ARGS]")
    settings = settings_from_args(args, os.environ, RUN_DEFAULTS)
    if settings.workers > 1:
        raise ConfigError("--workers", "proxy64 run serves one command from one process")
    status, report = run_with_command(settings, command, dict(os.environ))
    print_report(report, settings.log_format)
    if args.report and not write_report(args.report, report.to_json(), "run"):
        return status or 1
    return status
