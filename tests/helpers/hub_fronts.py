"""What the tests of the HTTP proxy's executor front share: a resolver that answers every name
with ::1 (never from its cache, so connect_now() gives way to connect() for names), a
ProxyContext with the real Dialer and Relay, an echo origin on ::1, and a client whose
accepted socket is handed to a front as the listener hands it (accepted(sock, address)).
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Callable
from functools import partial
from ipaddress import IPv6Address, ip_address
from typing import Any

import trio

from proxy64.config import HostPort
from proxy64.destination import Egress
from proxy64.net.context import ProxyContext
from proxy64.net.dialer import Dialer
from proxy64.net.executor import ExecutorFront
from proxy64.net.http_server import HTTP
from proxy64.net.listeners import bind_listener, bound_address
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.resolver import Resolution, ResolvedAddress
from proxy64.net.slots import ConnectionSlots
from proxy64.policy import DestinationPolicy
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.fakes import ListRecorder

PREFIX = Nat64Prefix.parse("64:ff9b::/96")
ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"


class LoopbackResolver:
    def resolve_cached(self, name: str) -> None:
        return None  # nothing cached: connect_now() gives way to connect()

    async def resolve(self, name: str) -> Resolution:
        record = ResolvedAddress(IPv6Address("::1"), synthesized=False, ttl=60)
        return Resolution(name, (), (record,), from_cache=False)


def context(
    recorder: ListRecorder,
    *,
    handshake_timeout: float = 5.0,
    idle_timeout: float = 10.0,
    slots: ConnectionSlots | None = None,
    credentials: dict[str, str] | None = None,
) -> ProxyContext:
    hub = RelayHub()  # run by front_of() in the test's nursery, as the server runs it
    return ProxyContext(
        # strict: 10.1.2.3 is refused before any dial, never sent out
        dialer=Dialer(
            LoopbackResolver(),
            PREFIX,
            Egress.NAT64,
            connect_timeout=5.0,
            policy=DestinationPolicy(strict_wkp=True),
        ),
        recorder=recorder,
        relay=Relay(idle_timeout=idle_timeout, splice_threshold=256 * 1024, hub=hub),
        credentials=credentials,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        connection_slots=slots or ConnectionSlots(8),
        hub=hub,
    )


_RUNNING: weakref.WeakSet[RelayHub] = weakref.WeakSet()


def front_of(ctx: ProxyContext, nursery: trio.Nursery, spawn: Callable[..., None]) -> ExecutorFront:
    """The HTTP executor front over ctx, its relay hub running in nursery (started once)."""
    hub = ctx.hub
    assert hub is not None
    if hub not in _RUNNING:
        _RUNNING.add(hub)
        nursery.start_soon(hub.run)
    return ExecutorFront(ctx, spawn, HTTP)


def open_front(
    ctx: ProxyContext, nursery: trio.Nursery, tasks: list[str] | None = None
) -> ExecutorFront:
    """The front in nursery; `tasks` collects the name of each step a task was spawned
    for (the executor's _dial_task, _helper_task, _relay_task)."""

    def spawn(async_fn: Callable[..., Any], *args: object) -> None:
        if tasks is not None:
            step = args[1] if len(args) > 1 else async_fn
            tasks.append(getattr(step, "__name__", repr(step)))
        nursery.start_soon(async_fn, *args)

    return front_of(ctx, nursery, spawn)


async def echo_origin(stream: trio.SocketStream) -> None:
    """Echoes until EOF, then closes (a CONNECT destination)."""
    with trio.fail_after(20):
        while data := await stream.receive_some(1 << 16):
            await stream.send_all(data)


async def start_origin(nursery: trio.Nursery, handler: Any = echo_origin) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="::1"))
    return int(listeners[0].socket.getsockname()[1])


class Client:
    """A client connected to a loopback listener (the product's, with its socket options)
    whose accepted socket goes to the front."""

    def __init__(self, front: ExecutorFront) -> None:
        listener = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
        self.sock = socket.create_connection(("127.0.0.1", bound_address(listener).port))
        self.front = front
        self.listener = listener
        self.sock.setblocking(False)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hand_over(self) -> None:
        raw, address = self.listener.accept()
        self.listener.close()
        self.front.accepted(raw, address)

    async def read_exactly(self, size: int) -> bytes:
        got = b""
        while len(got) < size:
            await trio.lowlevel.wait_readable(self.sock)
            data = self.sock.recv(1 << 16)
            assert data, f"EOF after {got!r}"
            got += data
        return got

    async def read_to_eof(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            data = self.sock.recv(1 << 16)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def close(self) -> None:
        self.sock.close()
