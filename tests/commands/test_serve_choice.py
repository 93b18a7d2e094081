"""Composition-root decisions without processes: prefix/egress choice, start-up line,
proxy variables for `run`, exit statuses, and a graceful stop of ProxyServer."""

from __future__ import annotations

import errno
import socket as stdsocket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing

from proxy64.app import Bound, build_context, build_parts, choose_nat64, startup_line
from proxy64.config import HostPort
from proxy64.defaults import ACCEPT_BACKOFF
from proxy64.destination import Egress, EgressChoice
from proxy64.net.context import ProxyContext
from proxy64.net.listeners import (
    FrontOpener,
    Listening,
    ProxyServer,
    Spawn,
    accept_in_hub,
    bind_listener,
)
from proxy64.net.nat64_state import Nat64Choice
from proxy64.net.recorder import Recorder
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.run_main import exit_status, proxy_environment
from proxy64.serve_config import ServeSettings
from tests.helpers.flaky_listener import FlakyListener

NSP = Nat64Prefix.parse("2001:db8:64::/96")
FOUND = Nat64Prefix.parse("2001:db8:aa::/96")
DNS = (HostPort(IPv4Address("127.0.0.53"), 53),)


def context() -> ProxyContext:
    settings = ServeSettings()
    parts = build_parts(settings, Nat64Choice(NSP, Egress.NAT64, "given"))
    return build_context(settings, parts, Recorder())


def discovering(found: list[Nat64Prefix]) -> Any:
    calls: list[tuple[HostPort, ...]] = []

    async def discover(servers: tuple[HostPort, ...]) -> list[Nat64Prefix]:
        calls.append(servers)
        await trio.lowlevel.checkpoint()
        return found

    discover.calls = calls  # type: ignore[attr-defined]
    return discover


@pytest.mark.parametrize(
    ("prefix", "egress", "found", "expect_prefix", "expect_egress", "why", "asked"),
    [
        (NSP, EgressChoice.AUTO, [], NSP, Egress.NAT64, "given", False),
        (NSP, EgressChoice.EMBEDDED, [], NSP, Egress.EMBEDDED, "given", False),
        (
            None,
            EgressChoice.EMBEDDED,
            [FOUND],
            "64:ff9b::/96",
            Egress.EMBEDDED,
            "well-known",
            False,
        ),
        (
            None,
            EgressChoice.AUTO,
            [FOUND],
            FOUND,
            Egress.NAT64,
            "RFC 7050 via 127.0.0.53:53",
            True,
        ),
        (
            None,
            EgressChoice.AUTO,
            [],
            "64:ff9b::/96",
            Egress.EMBEDDED,
            "no NAT64 found via DNS 127.0.0.53:53",
            True,
        ),
        (None, EgressChoice.NAT64, [], "64:ff9b::/96", Egress.NAT64, "assumed", True),
    ],
)
async def test_rfc7050_choice_of_prefix_and_egress(
    prefix: Nat64Prefix | None,
    egress: EgressChoice,
    found: list[Nat64Prefix],
    expect_prefix: Any,
    expect_egress: Egress,
    why: str,
    asked: bool,
) -> None:
    settings = ServeSettings(dns=DNS, nat64_prefix=prefix, egress=egress)
    discover = discovering(found)
    choice = await choose_nat64(settings, discover, pref64=False)
    assert str(choice.prefix) == str(expect_prefix)
    assert choice.egress is expect_egress
    assert why in choice.why
    assert bool(discover.calls) is asked


def test_startup_line_format() -> None:
    sock = bind_listener(HostPort(IPv4Address("127.0.0.1"), 0))
    try:
        port = sock.getsockname()[1]
        line = startup_line(Bound(sock, None), Nat64Choice(NSP, Egress.EMBEDDED, "given"), 3)
    finally:
        sock.close()
    assert line == (
        f"proxy64: SOCKS5 127.0.0.1:{port}, HTTP off; NAT64 prefix 2001:db8:64::/96 (given), "
        "egress embedded; 3 workers"
    )


def test_proxy_environment() -> None:
    socks = HostPort(IPv4Address("127.0.0.1"), 1)
    http = HostPort(IPv4Address("127.0.0.1"), 2)
    env = proxy_environment({"NO_PROXY": "x", "HOME": "/h"}, socks, http)
    assert env["https_proxy"] == env["HTTP_PROXY"] == "http://127.0.0.1:2"
    assert env["ALL_PROXY"] == env["all_proxy"] == "socks5h://127.0.0.1:1"
    assert env["NO_PROXY"] == "x" and "no_proxy" not in env and env["HOME"] == "/h"
    only_socks = proxy_environment({}, socks, None)
    assert only_socks["HTTPS_PROXY"] == "socks5h://127.0.0.1:1"


def test_exit_status_of_signals() -> None:
    assert [exit_status(c) for c in (0, 3, -15, -9)] == [0, 3, 143, 137]


Handler = Callable[[trio.SocketStream, ProxyContext], Awaitable[None]]


def task_front(handler: Handler) -> FrontOpener:
    """A front end that serves each accepted client with handler in a task it spawns
    (the socket closed when the task ends), to test what the listeners do around it."""

    class TaskFront:
        live = 0

        def __init__(self, ctx: ProxyContext, spawn: Spawn) -> None:
            self.ctx, self.spawn = ctx, spawn

        def accepted(self, sock: stdsocket.socket, address: Any) -> None:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            self.spawn(self.serve, stream)

        async def serve(self, stream: trio.SocketStream) -> None:
            try:
                await handler(stream, self.ctx)
            finally:
                stream.socket.close()

        async def drain(self) -> None:
            pass

    return TaskFront


async def test_stop_closes_listener_and_lets_live_tunnels_finish() -> None:
    """stop(): new connections are refused at once, a live one finishes within the grace."""
    started = trio.Event()
    release = trio.Event()

    async def handler(stream: trio.SocketStream, ctx: ProxyContext) -> None:
        started.set()
        await release.wait()
        await stream.send_all(b"finished")

    sock = bind_listener(HostPort(IPv4Address("127.0.0.1"), 0))
    port = sock.getsockname()[1]
    ctx = context()
    server = ProxyServer(ctx, [Listening(sock, task_front(handler))], grace=5.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await started.wait()
            server.stop()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)  # listener closed
            release.set()
            assert await client.receive_some(100) == b"finished"
            await client.aclose()
    assert server.live == 0


async def test_grace_expiry_cancels_stuck_tunnels() -> None:
    entered = trio.Event()

    async def handler(stream: trio.SocketStream, ctx: ProxyContext) -> None:
        entered.set()
        await trio.sleep_forever()

    sock = bind_listener(HostPort(IPv4Address("127.0.0.1"), 0))
    port = sock.getsockname()[1]
    ctx = context()
    server = ProxyServer(ctx, [Listening(sock, task_front(handler))], grace=0.2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await entered.wait()
            start = trio.current_time()
            server.stop()
        assert 0.15 < trio.current_time() - start < 2.0
        assert await client.receive_some(10) == b""  # closed by proxy64
        await client.aclose()
    assert sock.fileno() == -1  # the listening socket is closed


def test_proxy_environment_carries_credentials_percent_encoded() -> None:
    socks = HostPort(IPv4Address("127.0.0.1"), 1)
    http = HostPort(IPv4Address("127.0.0.1"), 2)
    env = proxy_environment({}, socks, http, ("al ice", "p@ss:w/rd"))
    assert env["HTTPS_PROXY"] == "http://al%20ice:p%40ss%3Aw%2Frd@127.0.0.1:2"
    assert env["ALL_PROXY"] == "socks5h://al%20ice:p%40ss%3Aw%2Frd@127.0.0.1:1"


async def test_accept_loop_backs_off_on_emfile_and_retries_aborted() -> None:
    listener = bind_listener(HostPort(IPv4Address("127.0.0.1"), 0))
    handled = trio.Event()
    closed: list[stdsocket.socket] = []

    async def handler(stream: trio.SocketStream, ctx: ProxyContext) -> None:
        closed.append(stream.socket)  # type: ignore[arg-type]
        handled.set()

    ctx = context()
    assert ctx.hub is not None
    flaky = FlakyListener(listener, errno.EMFILE, errno.ECONNABORTED)
    with listener, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            front = task_front(handler)(ctx, nursery.start_soon)
            await nursery.start(ctx.hub.run)
            nursery.start_soon(accept_in_hub, ctx.hub, flaky.as_socket(), front)
            client = stdsocket.create_connection(listener.getsockname())
            await handled.wait()
            await trio.sleep(0.01)  # let the task close the stream
            nursery.cancel_scope.cancel()
    first, second, third = flaky.calls[:3]
    assert second - first >= ACCEPT_BACKOFF  # backed off after EMFILE
    assert third - second < ACCEPT_BACKOFF  # ECONNABORTED: retried at once, no back-off
    assert closed[0].fileno() == -1  # the handled connection was closed
    client.close()
