"""`proxy64 tun run [options] -- CMD` and `proxy64 tun serve --device NAME | --fd N`.

run: CMD gets a fresh network namespace whose only network is a TUN device served by
proxy64 (IPv6 only unless --ipv4; DNS on the gateway answered by the DNS64 responder);
exits with CMD's status and prints the readiness report. serve: serve an existing TUN
device (by name, or an inherited fd) until SIGINT/SIGTERM. Setup failures (no
/dev/net/tun access, namespaces refused) print one line with the fix and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import signal
import sys
from functools import partial
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import TYPE_CHECKING

import trio

from proxy64.commands.common import (
    add_log_options,
    add_readiness_options,
    add_resolver_options,
    add_rule_options,
    checked,
    finish_readiness,
    setup_logging,
)
from proxy64.config import HostPort, parse_positive
from proxy64.defaults import (
    CONNECT_TIMEOUT,
    EXIT_NOT_READY,
    IDLE_TIMEOUT,
    TUN_GATEWAY,
    TUN_GATEWAY_V4,
    TUN_HIDDEN_V4_GATEWAY,
    TUN_MIN_MTU,
    TUN_MTU,
    TUN_NETWORK,
)
from proxy64.destination import EgressChoice
from proxy64.errors import ConfigError
from proxy64.fd_limit import raise_nofile_limit, tun_need
from proxy64.logformat import json_line
from proxy64.net.metrics import TUN_FRONT_ENDS, Metrics, sample_gauges
from proxy64.net.metrics_http import MetricsServer
from proxy64.net.metrics_setup import open_process_metrics
from proxy64.net.nat64_state import Nat64State
from proxy64.net.recorder import Recorder
from proxy64.report import ReadinessReport
from proxy64.serve_config import ServeSettings, parse_metrics_address
from proxy64.tun.device import TunDevice, TunSetupError, has_vnet_header, open_tun

if TYPE_CHECKING:  # built by the composition root, which this module calls at run time
    from proxy64.app import Parts

EXIT_SETUP = 2
logger = logging.getLogger(__name__)


def parse_mtu(text: str, option: str) -> int:
    value = parse_positive(text, option, integer=True)
    if not TUN_MIN_MTU <= value <= TUN_MTU:
        raise ConfigError(option, f"{text!r} is outside {TUN_MIN_MTU}-{TUN_MTU} (RFC 8200 §5)")
    return int(value)


def parse_device_name(text: str, option: str) -> str:
    """A Linux interface name: 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    if not text or text in (".", "..") or any(c in text for c in "/: \t\n"):
        raise ConfigError(option, f"{text!r} is not an interface name (no '/', ':' or spaces)")
    if len(text.encode()) > 15:  # IFNAMSIZ 16, with the NUL
        raise ConfigError(option, f"{text!r} is longer than 15 bytes")
    return text


def parse_fd(text: str, option: str) -> int:
    try:
        fd = int(text)
    except ValueError:
        fd = -1
    if fd < 0:
        raise ConfigError(option, f"{text!r} is not a file descriptor number (0 or more)")
    return fd


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_resolver_options(parser)
    tun = parser.add_argument_group("TUN")
    tun.add_argument(
        "--egress",
        choices=[c.value for c in EgressChoice],
        metavar="auto|nat64|embedded",
        default="auto",
        help="who does the NAT64 step: the network's NAT64, proxy64 itself (embedded: dial "
        "the embedded IPv4), or auto (PREF64, RFC 7050, else embedded) (default: auto)",
    )
    tun.add_argument(
        "--strict-wkp",
        action="store_true",
        help="behave as a strict NAT64 under 64:ff9b::/96 (tayga's wkpf-strict): refuse "
        "10/8, 100.64/10, 172.16/12, 192.168/16, 198.18/15 and the TEST-NETs before dialing "
        "(default: off; the readiness report marks them)",
    )
    tun.add_argument(
        "--mtu",
        metavar="N",
        type=checked("--mtu", parse_mtu),
        default=TUN_MTU,
        help=f"MTU of the TUN device, {TUN_MIN_MTU}-{TUN_MTU} (default: {TUN_MTU}, fastest)",
    )
    tun.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=checked("--idle-timeout", parse_positive),
        default=IDLE_TIMEOUT,
        help=f"close a TCP flow idle this long (default: {IDLE_TIMEOUT:g})",
    )
    tun.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        type=checked("--connect-timeout", parse_positive),
        default=CONNECT_TIMEOUT,
        help=f"give up dialing after this long (default: {CONNECT_TIMEOUT:g})",
    )
    add_rule_options(parser)
    add_readiness_options(parser)
    # `tun run` shares a terminal with CMD: per-flow lines would mix with its output, so
    # it logs warnings only by default (like `proxy64 run`); `tun serve` is a service.
    add_log_options(parser, default="warning" if parser.prog.endswith(" run") else "info")
    parser.add_argument(
        "--metrics",
        metavar="ADDR",
        type=checked("--metrics", parse_tun_metrics),
        help="serve Prometheus metrics at http://ADDR/metrics and a health check at "
        "/healthz; a loopback HOST:PORT or [::1]:PORT (port 0: a free port; TUN mode has "
        "no authentication) (default: off)",
    )


def parse_tun_metrics(text: str, option: str) -> HostPort | None:
    address = parse_metrics_address(text, option)
    if address is not None and not address.is_loopback:
        raise ConfigError(
            option,
            f"refusing to serve metrics on {address}: TUN mode has no authentication, so "
            "only a loopback address (127.0.0.1:PORT or [::1]:PORT) is accepted",
        )
    return address


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "tun",
        help="TUN mode: an IPv6-only network for one command (DNS64 + NAT64 built in)",
        description="TUN mode for apps that cannot use a proxy: 'tun run -- CMD' gives CMD "
        "a network namespace whose only network is proxy64's TUN device; 'tun serve' serves "
        "a TUN device you created. See 'proxy64 tun run --help'.",
    )
    sub = parser.add_subparsers(dest="tun_command", metavar="run|serve", required=True,
                                parser_class=type(parser))  # fmt: skip
    run = sub.add_parser(
        "run",
        help="run CMD in a namespace whose only network is proxy64's TUN",
        description="Run CMD in a fresh network namespace whose only network is a TUN "
        "device served by proxy64: IPv6 only (fd64::2/64, gateway and DNS fd64::1), names "
        "resolved by proxy64's DNS64, flows dialed from the host's network. AF_INET sockets "
        "are answered network unreachable, as on an IPv6-only network, and named in the "
        "report (hidden IPv4); --ipv4 translates them instead. Exits with CMD's status (or "
        f"{EXIT_NOT_READY} when a destination breaks --require LEVEL) and prints the "
        "readiness report.",
    )
    _add_common(run)
    run.add_argument(
        "--ipv4",
        action="store_true",
        help="also give CMD an IPv4 address (10.64.0.2/24); its flows are mapped into the "
        "NAT64 prefix (464XLAT-style)",
    )
    # dest "cmd": "command" is the top-level subcommand name (cli.py prints it in errors)
    run.add_argument(
        "cmd", metavar="-- CMD [ARGS]", nargs=argparse.REMAINDER, help="the command to run"
    )
    run.set_defaults(func=main_run)
    serve = sub.add_parser(
        "serve",
        help="serve an existing TUN device",
        description="Serve an existing TUN device: its peer address should be in "
        f"{TUN_NETWORK} with {TUN_GATEWAY} as gateway and DNS server.",
    )
    _add_common(serve)
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--device",
        metavar="NAME",
        type=checked("--device", parse_device_name),
        help="attach to (or create) TUN device NAME, at most 15 bytes (needs root)",
    )
    which.add_argument(
        "--fd",
        metavar="N",
        type=checked("--fd", parse_fd),
        help="an inherited TUN fd, already attached (TUNSETIFF)",
    )
    serve.add_argument("--ipv4", action="store_true", help=f"accept IPv4 via {TUN_GATEWAY_V4}")
    serve.set_defaults(func=main_serve)


def _serve_settings(args: argparse.Namespace) -> ServeSettings:
    settings = ServeSettings(
        socks=None,
        http=None,
        dns=tuple(args.dns),
        nat64_prefix=args.nat64_prefix,
        egress=EgressChoice(args.egress),
        synthesize_all=args.synthesize_all,
        idle_timeout=args.idle_timeout,
        connect_timeout=args.connect_timeout,
        strict_wkp=args.strict_wkp,
        rules=tuple(args.rules or ()),
    )
    if args.dns64_exclude:
        settings = dataclasses.replace(settings, dns64_exclude=tuple(args.dns64_exclude))
    return settings


async def _serve_device(
    args: argparse.Namespace,
    device: TunDevice,
    done: trio.Event,
    report: list[ReadinessReport],
) -> None:
    from proxy64 import app

    # `tun run` started CMD's process already: CMD keeps the limit it was given
    raise_nofile_limit(tun_need())
    settings = _serve_settings(args)
    nat64 = await app.choose_nat64(settings)
    state = Nat64State(nat64)  # followed by the watcher with --nat64-prefix auto
    with open_process_metrics(args.metrics, None, TUN_FRONT_ENDS) as (metrics, endpoint):
        # The composition root's parts, as `serve`'s: the same resolver answers the app's
        # DNS on the TUN and resolves for the dialer.
        parts = app.build_parts(settings, state, metrics)
        recorder = Recorder(ReadinessReport(prefix=nat64.prefix.network), metrics=metrics)
        app.report_follows(recorder.report, state)
        report.append(recorder.report)
        await _serve_stack(
            args,
            device,
            done,
            state,
            parts=parts,
            recorder=recorder,
            metrics=metrics,
            endpoint=endpoint,
        )


async def _serve_stack(
    args: argparse.Namespace,
    device: TunDevice,
    done: trio.Event,
    state: Nat64State,
    *,
    parts: Parts,
    recorder: Recorder,
    metrics: Metrics | None,
    endpoint: MetricsServer | None,
) -> None:
    from proxy64 import app
    from proxy64.net.dns_server import DNS64Responder
    from proxy64.tun.stack import StackSettings, TunStack

    settings = _serve_settings(args)
    nat64 = state.choice
    responder = DNS64Responder(parts.resolver)
    stack = TunStack(
        device,
        dialer=parts.dialer,
        recorder=recorder,
        relay=parts.relay,
        responder=responder,
        settings=StackSettings(
            gateway6=IPv6Address(TUN_GATEWAY),
            network6=IPv6Network(TUN_NETWORK),
            gateway4=IPv4Address(TUN_GATEWAY_V4) if args.ipv4 else None,
            mtu=args.mtu,
            observe4=None if args.ipv4 else IPv4Address(TUN_HIDDEN_V4_GATEWAY),
        ),
    )
    line = (
        f"proxy64 tun: NAT64 prefix {nat64.prefix} ({nat64.why}), egress "
        f"{nat64.egress.value}, MTU {args.mtu}, DNS64 on [{TUN_GATEWAY}]:53"
    )
    if endpoint is not None:
        line += f"; metrics {endpoint.url}"
    if args.log_format == "json":
        line = json_line(line, event="startup")
    sys.stderr.write(line + "\n")
    watch = app.nat64_watcher(settings, state)
    async with trio.open_nursery() as nursery:
        await nursery.start(parts.hub.run)
        if watch is not None:
            await nursery.start(watch)
        await nursery.start(stack.serve)
        if metrics is not None:
            info = partial(app.nat64_info, state)
            sample = partial(sample_gauges, metrics, lambda: len(stack.table), nat64=info)
            nursery.start_soon(sample)
        await done.wait()
        nursery.cancel_scope.cancel()
    recorder.report.a_lookups.update(stack.names.a_lookups)
    logger.debug("tun stack counters: %s", stack.table.stats())
    if stack.table.dropped or stack.table.rejected:
        logger.info("tun packets dropped %s rejected %s", dict(stack.table.dropped),
                    dict(stack.table.rejected))  # fmt: skip


def _write_report(
    args: argparse.Namespace,
    report: list[ReadinessReport],
    status: int,
    command: list[str],
    mode: str,
) -> int:
    if not report:
        return status
    return finish_readiness(args, report[0], status, command, mode, log_format=args.log_format)


def main_run(args: argparse.Namespace) -> int:
    from proxy64.tun.namespace import SandboxSettings, run_in_namespace

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("CMD", "no command given; usage: proxy64 tun run [options] -- CMD [ARGS]")
    setup_logging(args.log_level, args.log_format)
    report: list[ReadinessReport] = []

    async def serve(device: TunDevice, done: trio.Event) -> None:
        await _serve_device(args, device, done, report)

    sandbox = SandboxSettings(mtu=args.mtu, ipv4=args.ipv4)
    try:
        status = trio.run(run_in_namespace, command, sandbox, serve)
    except TunSetupError as exc:
        sys.stderr.write(f"proxy64 tun run: error: {exc}\n")
        return EXIT_SETUP
    return _write_report(args, report, status, command, "tun run")


def main_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    try:
        if args.device is not None:
            fd, name = open_tun(args.device)
            vnet = True
        else:
            fd, name = args.fd, f"fd {args.fd}"
            os.fstat(fd)
            vnet = has_vnet_header(fd)  # also checks that it is an attached TUN fd
    except TunSetupError as exc:
        sys.stderr.write(f"proxy64 tun serve: error: {exc}\n")
        return EXIT_SETUP
    except OSError as exc:
        what = "is not a TUN device" if exc.errno == errno.ENOTTY else "cannot be used"
        sys.stderr.write(
            f"proxy64 tun serve: error: --fd {args.fd} {what} ({exc.strerror}); pass the fd "
            "of an open /dev/net/tun attached with TUNSETIFF\n"
        )
        return EXIT_SETUP
    device = TunDevice(fd, args.mtu, vnet=vnet)
    report: list[ReadinessReport] = []

    async def serve() -> None:
        done = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_device, args, device, done, report)
                sys.stderr.write(f"proxy64 tun serve: serving {name}\n")
                async for _ in signals:
                    done.set()
                    break

    try:
        trio.run(serve)
    finally:
        device.close()
    return _write_report(args, report, 0, [], "tun serve")
