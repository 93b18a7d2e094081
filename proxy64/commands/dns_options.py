"""Options only the DNS commands (resolve, dns64) take, on top of commands/common.py."""

from __future__ import annotations

import argparse
import dataclasses
from ipaddress import IPv4Network

from proxy64.commands.common import checked
from proxy64.config import ResolverSettings
from proxy64.errors import ConfigError


def parse_network4(text: str, option: str) -> IPv4Network:
    try:
        return IPv4Network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not an IPv4 network like 192.0.2.0/24") from None


def add_mapped_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns64-mapped",
        metavar="NET",
        action="append",
        type=checked("--dns64-mapped", parse_network4),
        default=None,
        help="synthesize only A records inside NET (repeatable; BIND's 'mapped'; "
        "default: every IPv4 address, except non-global ones under 64:ff9b::/96)",
    )


def with_mapped(settings: ResolverSettings, args: argparse.Namespace) -> ResolverSettings:
    if args.dns64_mapped:
        return dataclasses.replace(settings, mapped=tuple(args.dns64_mapped))
    return settings
