"""`proxy64 run -- COMMAND`: serve while the command runs with the proxy variables set
(http(s)_proxy → the HTTP listener, ALL_PROXY → SOCKS5), and exit with its status.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

import trio

from proxy64.app import (
    EXIT_CANNOT_RUN,
    EXIT_NOT_FOUND,
    Bound,
    announce,
    bind,
    choose_nat64,
    make_server,
    nat64_watcher,
    report_follows,
    startup_line,
)
from proxy64.config import HostPort
from proxy64.fd_limit import raise_nofile_limit, serve_need
from proxy64.net.listeners import (
    ProxyServer,
)
from proxy64.net.metrics import Metrics
from proxy64.net.metrics_setup import open_process_metrics
from proxy64.net.nat64_state import Nat64State
from proxy64.net.recorder import Recorder
from proxy64.report import ReadinessReport
from proxy64.serve_config import ServeSettings
from proxy64.serving import sample_gauges_while, watch_until_cancelled

logger = logging.getLogger(__name__)


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: a signal n becomes 128+n."""
    return 128 - returncode if returncode < 0 else returncode


def proxy_environment(
    environ: dict[str, str],
    socks: HostPort | None,
    http: HostPort | None,
    credentials: tuple[str, str] | None = None,
) -> dict[str, str]:
    """http(s)_proxy → the HTTP listener, ALL_PROXY → SOCKS5 (socks5h: the proxy resolves).

    With authentication on, the URLs carry the first user's credentials (percent-encoded),
    so the command can authenticate. NO_PROXY/no_proxy are left as the user had them.
    """
    userinfo = ""
    if credentials is not None:
        user, password = credentials
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    env = dict(environ)
    if http is not None:
        url = f"http://{userinfo}{http}"
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env[name] = url
    if socks is not None:
        url = f"socks5h://{userinfo}{socks}"
        for name in ("ALL_PROXY", "all_proxy"):
            env[name] = url
        if http is None:
            for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
                env[name] = url
    return env


async def run_command(
    server: ProxyServer,
    bound: Bound,
    command: Sequence[str],
    environ: dict[str, str],
    watch: Callable[..., Awaitable[None]] | None = None,
    *,
    metrics: Metrics | None = None,
    state: Nat64State | None = None,
) -> int:
    """Serve while `command` runs with the proxy variables set; its exit status back.

    The listeners are bound (and listening) already, so the command may connect at once.
    """
    credentials = server.ctx.credentials
    first = next(iter(credentials.items())) if credentials else None
    env = proxy_environment(environ, bound.socks_address, bound.http_address, first)
    try:
        process = await trio.lowlevel.open_process(list(command), env=env)
    except OSError as exc:
        # as env(1) and shells do: 127 when the command is not found, 126 when not runnable
        sys.stderr.write(f"proxy64 run: cannot start {command[0]!r}: {exc.strerror}\n")
        return EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_RUN
    # after CMD's fork: CMD keeps the open-files limit it was given, the proxy takes its own
    raise_nofile_limit(serve_need(server.ctx.connection_slots.total_tokens))
    try:
        async with trio.open_nursery() as nursery:
            watching = trio.CancelScope()
            if watch is not None:
                await nursery.start(watch_until_cancelled, watch, watching)
            await nursery.start(server.run)
            sampler = trio.CancelScope()
            if metrics is not None:
                nursery.start_soon(sample_gauges_while, metrics, server, state, sampler)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(_forward_signals, signals, process)
                    await process.wait()
                    waiting.cancel_scope.cancel()
            server.stop()  # the command is done: close listeners, let tunnels drain
            watching.cancel()
            sampler.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return exit_status(process.returncode if process.returncode is not None else 1)


async def _forward_signals(signals: Any, process: trio.Process) -> None:
    async for signum in signals:
        if signum != signal.SIGINT:  # a terminal's Ctrl-C reached the command already
            process.send_signal(signum)


def run_with_command(
    settings: ServeSettings, command: Sequence[str], environ: dict[str, str]
) -> tuple[int, ReadinessReport]:
    """The whole `proxy64 run`: the proxy on the given (default free) ports, then CMD."""
    bound = bind(settings)
    try:
        nat64 = trio.run(choose_nat64, settings)
        credentials = dict(settings.credentials) or None
        with open_process_metrics(settings.metrics, credentials) as (metrics, endpoint):
            recorder = Recorder(ReadinessReport(prefix=nat64.prefix.network), metrics=metrics)
            state = Nat64State(nat64)
            report_follows(recorder.report, state)
            server = make_server(settings, bound, state, recorder, metrics, credentials=credentials)
            announce(startup_line(bound, nat64, metrics=endpoint), settings, sys.stderr)
            watch = nat64_watcher(settings, state)
            run = partial(
                run_command, server, bound, command, environ, watch, metrics=metrics, state=state
            )
            status = trio.run(run)
        return status, recorder.report
    finally:
        bound.close()
