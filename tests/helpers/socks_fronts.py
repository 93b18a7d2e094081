"""The SOCKS listener (the one executor with the SOCKS session machine) behind a real
ProxyServer, Dialer and Relay on loopback, wired as app.py wires it (the server runs the
relay hub), and a trio Instrument that records which tasks were spawned."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from ipaddress import ip_address

import trio

from proxy64.config import HostPort
from proxy64.destination import Egress
from proxy64.net.context import ProxyContext
from proxy64.net.dialer import Dialer
from proxy64.net.executor import ExecutorFront
from proxy64.net.listeners import Listening, ProxyServer, bind_listener, bound_address
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots
from proxy64.net.socks_server import SOCKS
from tests.helpers.fakes import NSP, ListRecorder
from tests.helpers.fakes import CachedNameResolver as Resolver
from tests.helpers.socks5_client import NO_AUTH_GREETING
from tests.helpers.streams import receive_exactly

NOAUTH = NO_AUTH_GREETING


class Spawns(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)

    def proxy64(self) -> list[str]:
        return [n for n in self.names if n.startswith("proxy64.")]


@dataclass
class Proxy:
    port: int
    server: ProxyServer
    front: ExecutorFront
    recorder: ListRecorder
    resolver: Resolver


@asynccontextmanager
async def proxy(
    *,
    handshake_timeout: float = 5.0,
    idle_timeout: float = 30.0,
    max_connections: int = 100,
    credentials: dict[str, str] | None = None,
    grace: float = 5.0,
    connect_timeout: float = 10.0,
) -> AsyncIterator[Proxy]:
    resolver = Resolver()
    recorder = ListRecorder()
    hub = RelayHub()  # the server runs it
    ctx = ProxyContext(
        dialer=Dialer(resolver, NSP, Egress.EMBEDDED, connect_timeout=connect_timeout),
        recorder=recorder,
        relay=Relay(idle_timeout=idle_timeout, hub=hub),
        credentials=credentials,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        connection_slots=ConnectionSlots(max_connections),
        hub=hub,
    )
    sock = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
    port = bound_address(sock).port
    server = ProxyServer(ctx, [Listening(sock, SOCKS.opener())], grace=grace)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        front = server.fronts[0]
        assert isinstance(front, ExecutorFront)
        yield Proxy(port, server, front, recorder, resolver)
        server.stop()


async def serve_socks(
    nursery: trio.Nursery, ctx: ProxyContext, host: str = "127.0.0.1"
) -> tuple[int, ProxyContext]:
    """The SOCKS listener as app.py wires it, over ctx (given a relay hub if it has none:
    the server runs it), in nursery until it is cancelled: its port and the context."""
    if ctx.hub is None:
        ctx = replace(ctx, hub=RelayHub())
    sock = bind_listener(HostPort(ip_address(host), 0))
    server = ProxyServer(ctx, [Listening(sock, SOCKS.opener())], grace=1.0)
    await nursery.start(server.run)
    return bound_address(sock).port, ctx


async def connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect(("127.0.0.1", port))
    return sock


async def echo_once(client: trio.socket.SocketType, data: bytes) -> None:
    await client.send(data)
    assert await receive_exactly(client, len(data)) == data
