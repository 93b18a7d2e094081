"""Listening sockets and the accept loop that hands each client to its front end.

Sockets are bound with the stdlib before trio starts, so `--workers N` can fork after
binding: every worker opens its own SO_REUSEPORT socket on the same (already chosen) port
and the kernel spreads new connections across them. ProxyServer.run runs the relay hub
(the context's, so it outlives every tunnel it carries) and accepts until stop(), then
closes the listeners and gives live connections `grace` seconds to finish before they are
ended. The listener is a relay-hub watcher: each accepted socket is given to its front end
(a FrontOpener chosen by app.py, `opener(ctx, spawn)` → Front; net/executor.py's)
synchronously, with no task; the front starts a task through `spawn` only for a
connection that must wait, and a task's unexpected exception is logged and ends only its
connection. A failed accept() is retried at once (ECONNABORTED) or after a back-off
(EMFILE/ENFILE/ENOMEM). At shutdown each Front's drain() runs in the connections nursery,
so its connections get the grace and are ended when it runs out.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import ip_address
from typing import Any, NamedTuple, Protocol

import trio

from proxy64.config import HostPort
from proxy64.defaults import ACCEPT_BACKOFF, ACCEPT_BATCH, LISTEN_BACKLOG
from proxy64.errors import OUT_OF_RESOURCES
from proxy64.net.context import ProxyContext
from proxy64.net.relay_hub import RelayHub

logger = logging.getLogger(__name__)

_ACCEPT_RETRY = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
Spawn = Callable[..., None]  # spawn(async_fn, *args): a task in the server's nursery


class Front(Protocol):
    """A front end driven without a task per connection (e.g. executor.ExecutorFront)."""

    @property
    def live(self) -> int:
        """Connections it holds now (not counting those handed to a task)."""
        ...

    def accepted(self, sock: socket.socket, address: Any) -> None:
        """Take a freshly accepted (blocking-mode) socket; never raises, never waits."""
        ...

    async def drain(self) -> None:
        """Return once it holds no connection; when cancelled, end them all."""
        ...


FrontOpener = Callable[[ProxyContext, Spawn], Front]


class Listening(NamedTuple):
    """A bound listening socket and the front end its connections go to."""

    sock: socket.socket
    front: FrontOpener


def bind_listener(
    address: HostPort, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """A listening, non-blocking stdlib TCP socket (IPv6 sockets are IPv6-only); with
    listen=False only bound, with the same options (a port reservation)."""
    family = socket.AF_INET6 if address.host.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Nagle off for every client (small replies go out at once): Linux copies the
        # listener's TCP_NODELAY to each accepted socket, so no setsockopt per connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((str(address.host), address.port))
        if listen:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_address(sock: socket.socket) -> HostPort:
    host, port = sock.getsockname()[:2]
    return HostPort(ip_address(host.split("%")[0]), int(port))


def describe_bind_error(address: HostPort, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{address} is already in use by another program; pick another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{address} is not an address of this host"
    if exc.errno == errno.EACCES:
        return f"{address}: ports below 1024 need root (CAP_NET_BIND_SERVICE)"
    return f"cannot listen on {address}: {exc.strerror}"


class ProxyServer:
    """Accepts on the given sockets, each into its front end (SOCKS, HTTP)."""

    def __init__(self, ctx: ProxyContext, sockets: Sequence[Listening], *, grace: float) -> None:
        if ctx.hub is None:
            raise ValueError("the listeners' front ends need the context's relay hub")
        self.ctx = ctx
        self.hub: RelayHub = ctx.hub
        self.grace = grace
        self._sockets = list(sockets)
        self._accepting = trio.CancelScope()
        self.live = 0  # tasks the front ends started for connections that must wait
        self.fronts: list[Front] = []

    def stop(self) -> None:
        """Stop accepting; live connections get `grace` seconds before they are ended."""
        self._accepting.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as hub_nursery:
                await hub_nursery.start(self.hub.run)
                await self._serve(task_status)
                hub_nursery.cancel_scope.cancel()  # every tunnel it carried has ended
        finally:
            for entry in self._sockets:
                entry.sock.close()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as connections:

            def spawn(async_fn: Callable[..., Awaitable[None]], *args: object) -> None:
                connections.start_soon(self._run_spawned, async_fn, *args)

            with self._accepting:
                async with trio.open_nursery() as accepting:
                    for sock, opener in self._sockets:
                        front = opener(self.ctx, spawn)
                        self.fronts.append(front)
                        accepting.start_soon(accept_in_hub, self.hub, sock, front)
                    task_status.started()
                    await trio.sleep_forever()
            for entry in self._sockets:
                entry.sock.close()
            live = self.live + sum(front.live for front in self.fronts)
            if live:
                logger.info("closing: %d tunnels have %g s to finish", live, self.grace)
            for front in self.fronts:
                connections.start_soon(front.drain)
            connections.cancel_scope.deadline = trio.current_time() + self.grace

    async def _run_spawned(self, async_fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """A task a front end started for a connection that must wait."""
        self.live += 1
        try:
            await async_fn(*args)
        except Exception:
            logger.exception("front end failed on a connection (a bug in proxy64)")
        finally:
            self.live -= 1


class _HubAcceptor:
    """The listener as a relay-hub watcher: accepted sockets go to the front end in the
    same wake-up that may read their greetings (no trip through trio per accept)."""

    __slots__ = ("failed", "front", "kind", "listener", "problem")

    def __init__(self, listener: socket.socket, front: Front) -> None:
        self.listener = listener
        self.front = front
        self.problem: OSError | None = None
        self.failed = trio.Event()
        # socket.accept() reads the listener's family and type as enums for every socket
        # it makes; read once here, the accepted sockets are made from plain ints.
        self.kind = (int(listener.family), int(listener.type), listener.proto)

    def readable(self, now: float) -> None:
        if self.problem is not None:
            return
        listener, (family, kind, proto) = self.listener, self.kind
        for _ in range(ACCEPT_BATCH):
            try:
                # accept4(2) under socket.accept() (close-on-exec): the fd and the address
                fd, address = listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError as exc:  # the task below retries or backs off
                self.problem = exc
                self.failed.set()
                return
            self.front.accepted(socket.socket(family, kind, proto, fileno=fd), address)


async def accept_in_hub(hub: RelayHub, listener: socket.socket, front: Front) -> None:
    """Accept through the hub until cancelled; a failed accept() is handled here (retry,
    back-off on EMFILE/ENFILE/ENOMEM) while the hub does not watch the listener."""
    fd = listener.fileno()
    acceptor = _HubAcceptor(listener, front)
    hub.watch(fd, acceptor)
    try:
        while True:
            await acceptor.failed.wait()
            problem, acceptor.problem = acceptor.problem, None
            acceptor.failed = trio.Event()
            hub.unwatch(fd)
            assert problem is not None
            await _accept_failed(problem)
            hub.watch(fd, acceptor)
    finally:
        hub.unwatch(fd)


async def _accept_failed(exc: OSError) -> None:
    """A failed accept(): retry at once, back off, or raise (not an accept problem)."""
    if exc.errno in _ACCEPT_RETRY:
        await trio.lowlevel.checkpoint()  # the client gave up before we accepted it
        return
    if exc.errno in OUT_OF_RESOURCES:
        logger.error("accept: %s; retrying in %g s", os.strerror(exc.errno or 0), ACCEPT_BACKOFF)
        await trio.sleep(ACCEPT_BACKOFF)
        return
    raise exc
