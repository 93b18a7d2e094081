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

EPILOG = """\
examples:
  proxy64 serve                       SOCKS5 on 127.0.0.1:1080, HTTP on 127.0.0.1:8080
  proxy64 run -- curl https://example.org/
                                      one command with the proxy variables set
  proxy64 tun run -- curl https://example.org/
                                      an app that ignores proxy variables (TUN + namespace)
  proxy64 resolve example.org         what proxy64 would dial for a name
  proxy64 discover                    this network's NAT64 prefix (PREF64, RFC 7050)
  proxy64 dns64 --listen 127.0.0.1:5353
                                      a DNS64 server for other programs

Run 'proxy64 COMMAND --help' for a command's options. Bad input: one line, exit status 2.
"""


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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"proxy64 {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=OneLineParser
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The (sub)parser of the command in args, for its usage-error line."""
    names = [getattr(args, "command", None), getattr(args, "tun_command", None)]
    for name in names:
        if not isinstance(name, str):
            break
        found = _subparser(parser, name)
        if found is None:
            break
        parser = found
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choice: argparse.ArgumentParser | None = action.choices.get(name)
            return choice
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Name the command whose options were wrong, not the top-level parser.
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"{_command_parser(parser, args).prog}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code
