"""Listening sockets and the accept loops that hand each client to its front end.

Sockets are bound with the stdlib before trio starts, so `--workers N` can fork after
binding: every worker opens its own SO_REUSEPORT socket on the same (already chosen) port
and the kernel spreads new connections across them. ProxyServer.run accepts until stop(),
then closes the listeners and gives live tunnels `grace` seconds to finish before
cancelling them. A handler's unexpected exception is logged and ends only its connection.
The accept loop is our own (not trio.serve_listeners): one layer and one close fewer per
connection, with the same retry on ECONNABORTED and back-off on EMFILE/ENFILE/ENOMEM.

A listener may also have a hub-driven front end (a FrontOpener, `opener(ctx, spawn)` →
Front, chosen by app.py): each accepted socket is then given to Front.accepted()
synchronously, with no task; the front end starts a task through `spawn` only for a
connection that must wait. It needs the relay hub the context carries (ctx.hub); without
one the listener accepts into tasks. At shutdown each Front's drain() runs in the
connections nursery, so its connections get the same grace as task-held ones and are
ended when it runs out. The server runs the relay hub around its connections, so the hub
outlives every tunnel it carries.
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
from proxy64.net.context import ProxyContext
from proxy64.net.relay_hub import RelayHub

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
ACCEPT_BACKOFF = 0.1  # seconds to wait when accept() fails for lack of fds or memory
ACCEPT_BATCH = 32  # connections accepted in a row before the accept loop yields
_ACCEPT_BACK_OFF = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
Handler = Callable[[trio.SocketStream, ProxyContext], Awaitable[None]]
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
    """A bound listening socket, its task-path handler and, optionally, its hub-driven
    front end (used when the context carries a relay hub; a listener with no handler
    needs one)."""

    sock: socket.socket
    handler: Handler | None
    front: FrontOpener | None = None


def bind_listener(address: HostPort, *, reuse_port: bool = False) -> socket.socket:
    """A listening, non-blocking stdlib TCP socket (IPv6 sockets are IPv6-only)."""
    family = socket.AF_INET6 if address.host.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(address.host), address.port))
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
    """Accepts on the given sockets, one front-end handler per kind ("socks", "http")."""

    def __init__(
        self,
        ctx: ProxyContext,
        sockets: Sequence[Listening | tuple[socket.socket, Handler | None]],
        *,
        grace: float,
    ) -> None:
        self.ctx = ctx
        self.grace = grace
        self._sockets = [Listening(*entry) for entry in sockets]
        self._accepting = trio.CancelScope()
        self.live = 0  # connections being handled by a task now
        self.fronts: list[Front] = []  # hub-driven front ends (their own live counts)

    def stop(self) -> None:
        """Stop accepting; live tunnels get `grace` seconds before they are cancelled."""
        self._accepting.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = [trio.socket.from_stdlib_socket(entry.sock) for entry in self._sockets]
        hub = self.ctx.hub
        try:
            async with trio.open_nursery() as hub_nursery:
                if hub is not None:
                    await hub_nursery.start(hub.run)
                await self._serve(hub, listeners, task_status)
                hub_nursery.cancel_scope.cancel()  # every tunnel it carried has ended
        finally:
            for listener in listeners:
                listener.close()

    async def _serve(
        self,
        hub: RelayHub | None,
        listeners: list[trio.socket.SocketType],
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as connections:

            def spawn(async_fn: Callable[..., Awaitable[None]], *args: object) -> None:
                connections.start_soon(self._run_spawned, async_fn, *args)

            with self._accepting:
                async with trio.open_nursery() as accepting:
                    for sock, handler, opener in self._sockets:
                        front: Front | None = None
                        if opener is not None and hub is not None:
                            front = opener(self.ctx, spawn)
                            self.fronts.append(front)
                        elif handler is None:
                            raise ValueError("a listener without a handler needs a relay hub")
                        accepting.start_soon(self._accept_loop, sock, handler, connections, front)
                    task_status.started()
                    await trio.sleep_forever()
            for listener in listeners:
                listener.close()
            live = self.live + sum(front.live for front in self.fronts)
            if live:
                logger.info("closing: %d tunnels have %g s to finish", live, self.grace)
            for front in self.fronts:
                connections.start_soon(front.drain)
            connections.cancel_scope.deadline = trio.current_time() + self.grace

    async def _accept_loop(
        self,
        listener: socket.socket | trio.socket.SocketType,
        handler: Handler | None,
        connections: trio.Nursery,
        front: Front | None = None,
    ) -> None:
        """Accept forever; out of fds/memory: log, back off, retry (never crash).

        On a stdlib socket (what run() passes) it accepts on the raw non-blocking socket
        until it would block, then waits for readability: under load one wake-up accepts
        a whole batch (no checkpoint per connection); after ACCEPT_BATCH in a row it
        yields so tunnels are not starved. Anything else is awaited with its accept().
        With a front, the listener is watched by the relay hub instead (_accept_in_hub):
        each socket goes to front.accepted() in the hub's wake-up, no task per accept."""
        if not isinstance(listener, socket.socket):
            assert handler is not None
            while True:
                try:
                    sock, _ = await listener.accept()
                except OSError as exc:
                    await _accept_failed(exc)
                    continue
                connections.start_soon(self._handle, trio.SocketStream(sock), handler)
        fd = listener.fileno()  # the non-blocking stdlib socket run() wrapped for closing
        if front is not None:
            assert self.ctx.hub is not None  # fronts are opened only with a hub
            await _accept_in_hub(self.ctx.hub, listener, front)
            return
        assert handler is not None  # ProxyServer checked it
        batch = 0
        while True:
            try:
                raw, _ = listener.accept()
            except BlockingIOError:
                batch = 0
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as exc:
                await _accept_failed(exc)
                continue
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
            connections.start_soon(self._handle, stream, handler)
            batch += 1
            if batch >= ACCEPT_BATCH:
                batch = 0
                await trio.lowlevel.checkpoint()

    async def _handle(self, stream: trio.SocketStream, handler: Handler) -> None:
        self.live += 1
        try:
            await handler(stream, self.ctx)
        except Exception:
            logger.exception("front end failed on a connection (a bug in proxy64)")
        finally:
            self.live -= 1
            stream.socket.close()  # idempotent; no await on the per-connection path


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

    __slots__ = ("failed", "front", "listener", "problem")

    def __init__(self, listener: socket.socket, front: Front) -> None:
        self.listener = listener
        self.front = front
        self.problem: OSError | None = None
        self.failed = trio.Event()

    def readable(self, now: float) -> None:
        if self.problem is not None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                raw, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # the task below retries or backs off
                self.problem = exc
                self.failed.set()
                return
            self.front.accepted(raw, address)


async def _accept_in_hub(hub: RelayHub, listener: socket.socket, front: Front) -> None:
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
    if exc.errno in _ACCEPT_BACK_OFF:
        logger.error("accept: %s; retrying in %g s", os.strerror(exc.errno or 0), ACCEPT_BACKOFF)
        await trio.sleep(ACCEPT_BACKOFF)
        return
    raise exc
