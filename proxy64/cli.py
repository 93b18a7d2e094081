"""The proxy64 command line: argparse → typed settings → the command's run function.

Each subcommand lives in proxy64/commands/<name>.py and exposes
`register(subparsers) -> None`, setting `func` (args -> exit code) on its parser.
A bad flag or value prints one line naming the option and what it accepts, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from proxy64 import __version__
from proxy64.errors import ConfigError

# Subcommand modules, in the order `proxy64 --help` lists them.
COMMAND_MODULES = (
    "proxy64.commands.serve",
    "proxy64.commands.run",
    "proxy64.commands.tun",
    "proxy64.commands.resolve",
    "proxy64.commands.discover",
    "proxy64.commands.dns64",
)

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="proxy64",
        description=(
            "IPv6 through NAT64 for one app: a SOCKS5/HTTP proxy and a TUN mode that resolve "
            "names with DNS64 and dial out over IPv6 (network NAT64 or the embedded egress)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"proxy64 {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=OneLineParser
    )
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command not built yet in this checkout
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"proxy64 {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code
