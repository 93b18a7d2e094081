"""`proxy64 dns64 --listen ADDR`: run a DNS64 server (RFC 6147) on UDP and TCP.

Runs until SIGINT or SIGTERM, then exits 0. A listen address that cannot be bound is one
line and exit 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio

from proxy64.commands.common import (
    add_log_options,
    add_resolver_options,
    checked,
    resolver_settings,
    setup_logging,
)
from proxy64.config import HostPort, ResolverSettings, parse_host_port
from proxy64.defaults import DNS64_LISTEN, DNS_PORT
from proxy64.net.dns_server import DNS64Responder, serve_dns64
from proxy64.net.nat64_state import Nat64State
from proxy64.net.nat64_watch import Nat64Sources, follow_nat64, resolver_choice
from proxy64.net.resolver import DNS64Resolver

from .dns_options import add_mapped_option, with_mapped

EXIT_CANNOT_LISTEN = 1


def _listen(text: str, option: str) -> HostPort:
    return parse_host_port(text, option, default_port=DNS_PORT)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dns64",
        help="run a DNS64 server (UDP and TCP)",
        description=(
            "Serve DNS64 (RFC 6147) on UDP and TCP: AAAA queries get native AAAA or AAAA "
            "synthesized from A into the NAT64 prefix; PTR queries inside the prefix get a "
            "CNAME into in-addr.arpa (RFC 6147 §5.3.1); other types are passed to the "
            "upstream servers; zone transfers are refused. Runs until interrupted."
        ),
    )
    parser.add_argument(
        "--listen",
        metavar="ADDR",
        type=checked("--listen", _listen),
        default=_listen(DNS64_LISTEN, "--listen"),
        help=f"address to serve on, HOST[:PORT] or [IPv6][:PORT] (default: {DNS64_LISTEN}; "
        f"port {DNS_PORT} when omitted)",
    )
    add_resolver_options(parser)
    add_mapped_option(parser)
    add_log_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    settings = with_mapped(resolver_settings(args), args)
    return trio.run(_serve, settings, args.listen)


async def _serve(settings: ResolverSettings, listen: HostPort) -> int:
    choice, note = await resolver_choice(settings)
    prefix = choice.prefix
    if note:
        sys.stderr.write(f"proxy64 dns64: {note}\n")
    state = Nat64State(choice)
    resolver = DNS64Resolver(settings, state)
    responder = DNS64Responder(resolver)
    async with trio.open_nursery() as nursery:
        if settings.prefix is None:  # auto: follow the network's prefix while serving
            nursery.start_soon(follow_nat64, state, Nat64Sources(settings.servers))
        try:
            bound = await nursery.start(serve_dns64, responder, listen)
        except OSError as exc:
            sys.stderr.write(
                f"proxy64 dns64: cannot listen on {listen}: {exc.strerror or exc}; "
                "choose another --listen address or port\n"
            )
            return EXIT_CANNOT_LISTEN
        upstream = ", ".join(map(str, resolver.servers))
        sys.stderr.write(
            f"proxy64 dns64: serving on {bound} (UDP and TCP), prefix {prefix}, "
            f"upstream {upstream}\n"
        )
        sys.stderr.flush()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0
