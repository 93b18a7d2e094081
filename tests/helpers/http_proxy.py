"""The HTTP proxy as app.py wires it, for tests: the listener through the one executor
(net/executor.py with net/http_server.HTTP), and a single accepted socket handed to the
same executor front as the listener hands it."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import ip_address
from typing import Any

import trio

from proxy64.config import HostPort
from proxy64.net.context import ProxyContext
from proxy64.net.dial_types import DialerLike
from proxy64.net.http_server import HTTP
from proxy64.net.listeners import Front, Listening, ProxyServer, bind_listener, bound_address
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots
from tests.helpers.fakes import ListRecorder, simple_relay


def plain_context(dialer: DialerLike, recorder: ListRecorder) -> ProxyContext:
    """A context for serve_socket(): dialer and recorder, the test relay, no credentials,
    handshake 5 s, idle 10 s, 8 connection slots."""
    return ProxyContext(
        dialer=dialer,
        recorder=recorder,
        relay=simple_relay,
        credentials=None,
        handshake_timeout=5.0,
        idle_timeout=10.0,
        connection_slots=ConnectionSlots(8),
    )


def with_hub(ctx: ProxyContext) -> ProxyContext:
    """ctx with a relay hub of its own when it has none (its owner runs it)."""
    return ctx if ctx.hub is not None else replace(ctx, hub=RelayHub())


async def serve_http(nursery: trio.Nursery, ctx: ProxyContext, host: str = "127.0.0.1") -> int:
    """The HTTP listener over ctx (given a relay hub if it has none: the server runs it),
    in nursery until it is cancelled; its port."""
    sock = bind_listener(HostPort(ip_address(host), 0))
    server = ProxyServer(with_hub(ctx), [Listening(sock, HTTP.opener())], grace=1.0)
    await nursery.start(server.run)
    return bound_address(sock).port


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """A TCP connection on 127.0.0.1: (the client's end, the accepted end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    return client, accepted


async def serve_socket(
    ctx: ProxyContext,
    sock: socket.socket,
    address: Any = None,
    *,
    opened: Callable[[Front], Awaitable[None]] | None = None,
) -> None:
    """Hand one accepted socket to the HTTP executor front (as the listener does, with a
    relay hub of its own running) and return once its connection has ended. `opened`,
    if given, runs beside it (e.g. to talk to the client end) before the wait."""
    ctx = replace(ctx, hub=RelayHub())
    assert ctx.hub is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(ctx.hub.run)

        def spawn(async_fn: Callable[..., Awaitable[None]], *args: object) -> None:
            nursery.start_soon(async_fn, *args)

        front = HTTP.opener()(ctx, spawn)
        front.accepted(sock, address if address is not None else sock.getpeername())
        if opened is not None:
            await opened(front)
        await front.drain()
        nursery.cancel_scope.cancel()
