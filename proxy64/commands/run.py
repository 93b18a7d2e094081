"""`proxy64 run [serve options] [--report FILE] [--require LEVEL] -- CMD [ARGS]`.

Starts the proxy on free loopback ports, runs CMD with http_proxy/https_proxy/HTTP_PROXY/
HTTPS_PROXY (http://) and ALL_PROXY/all_proxy (socks5h://) pointing at it (NO_PROXY kept
as it was), prints the readiness report to stderr (--report writes it as JSON, Markdown
or JUnit XML too) and exits with CMD's status (a signal n → 128+n), or EXIT_NOT_READY
when a destination breaks the --require level.
"""

from __future__ import annotations

import argparse
import os

from proxy64.commands.common import add_readiness_options, finish_readiness
from proxy64.commands.serve import add_serve_options, settings_from_args
from proxy64.defaults import EXIT_NOT_READY
from proxy64.errors import ConfigError

# run: free loopback ports; warnings only, so the logs do not drown the command's output
RUN_DEFAULTS = {"socks": "127.0.0.1:0", "http": "127.0.0.1:0", "log_level": "warning"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run one command through proxy64 (proxy variables set for it)",
        description="Start proxy64 on free loopback ports, run CMD with the proxy variables "
        "set, print the readiness report at exit and exit with CMD's status (or "
        f"{EXIT_NOT_READY} when a destination breaks --require LEVEL).",
    )
    add_serve_options(
        parser, listen_default="127.0.0.1:0, a free port", log_default=RUN_DEFAULTS["log_level"]
    )
    add_readiness_options(parser)
    parser.add_argument(
        "cmd", metavar="-- CMD [ARGS]", nargs=argparse.REMAINDER, help="the command to run"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from proxy64.run_main import run_with_command

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("CMD", "no command given; usage: proxy64 run [options] -- CMD [ARGS]")
    settings = settings_from_args(args, os.environ, RUN_DEFAULTS)
    if settings.workers > 1:
        raise ConfigError("--workers", "proxy64 run serves one command from one process")
    status, report = run_with_command(settings, command, dict(os.environ))
    return finish_readiness(args, report, status, command, "run", log_format=settings.log_format)
