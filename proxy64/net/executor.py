"""The one executor of a connection: it carries out what the protocol's session machine
(proto/session.py) asks, in the relay hub, and decides nothing about the protocol.

An accepted client becomes an `Executor` (one per connection) held by its listener's
`ExecutorFront` (listeners.Front). No trio task is started for it unless something must
be awaited: the client's fd and a dial in flight are hub watchers (relay_hub.py), the
machine's deadline, a dial's deadline, the linger and the tunnel's idle check are one hub
timer, and the data phase is a hub tunnel the executor owns. A task is spawned (in the
server's nursery, through `spawn`) only for a dial that must be awaited (a name to
resolve, a race), a protocol's `Await` step (its helper), and a tunnel the hub promotes
(bulk, a full destination) or cannot carry.

Here: what a protocol gives (`Served`: its session machine per client, its `Await`
helpers), the listener's `ExecutorFront`, and `Executor`, which carries out the commands
and answers the hub's callbacks; its client side (socket, queue, timer, tasks, ending) is
executor_client.py, its remote side (dial, tunnel, awaited steps) executor_remote.py.

Invariants:
- Commands are carried out in order; a Send that would block waits for writability
  before the next command. A Tick or ClientLost answered with commands replaces what is
  still queued (proto/session.py).
- The client's fd is watched for at most one direction. A watch for writability lasts
  only while a Send waits; a watch for reading may outlive its Receive (the tunnel takes
  it over without epoll_ctl) and ends at the first readiness nobody waits for
  (level-triggered readiness would otherwise call back forever).
- Each connection ends once (_end): sockets closed, the --max-connections slot released,
  the open record finished with its outcome; a task that holds the connection ends it
  unless it handed it back.
- A bug in a callback or task ends that connection only (logged; outcome as the
  protocol's `bug_outcome`).
- drain() (at shutdown) waits for the connections; cancelled, it ends them (a task's
  connection through its cancel scope).
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from select import EPOLLOUT
from typing import Any

import trio

from proxy64.errors import Proxy64Error
from proxy64.net.context import ProxyContext
from proxy64.net.executor_client import (
    SHUTDOWN_OUTCOME,
    AwaitHelper,
    ClientSide,
    DialedHelper,
    SessionFactory,
    Wait,
)
from proxy64.net.executor_remote import RemoteSide
from proxy64.net.listeners import FrontOpener, Spawn
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import Ending, RelayHub
from proxy64.net.splice import HAVE_SPLICE
from proxy64.proto.session import (
    Await,
    Close,
    Dial,
    Finish,
    Receive,
    Record,
    Send,
    Tick,
)
from proxy64.proto.session import Relay as RelayCommand

__all__ = [
    "SHUTDOWN_OUTCOME",
    "AwaitHelper",
    "DialedHelper",
    "Executor",
    "ExecutorFront",
    "Served",
    "SessionFactory",
    "Wait",
    "borrow_slot",
    "client_text",
]


@dataclass(frozen=True)
class Served:
    """What a protocol gives the executor: its name for log lines, its logger, the
    machine for each client, one helper per `Await` subclass it uses, how much to read
    per Receive, and the outcome of a connection a bug ended ("{exc!r}" may be used)."""

    name: str
    sessions: SessionFactory
    logger: logging.Logger
    read_size: int
    helpers: Mapping[type[Any], AwaitHelper] = field(default_factory=dict)
    bug_outcome: str = "internal error: {exc!r}"
    # helpers of the `Await` steps that work on the dialed stream
    dialed_helpers: Mapping[type[Any], DialedHelper] = field(default_factory=dict)
    # dialed helpers whose coroutine awaits only net/steps.py's waits (HTTP's Forward): run
    # from hub callbacks while it waits for the dialed socket, in a task from any other wait
    stepped_helpers: Mapping[type[Any], DialedHelper] = field(default_factory=dict)

    def opener(self) -> FrontOpener:
        """The listeners.FrontOpener for this protocol (what app.py puts in Listening)."""
        return lambda ctx, spawn: ExecutorFront(ctx, spawn, self)


def borrow_slot(ctx: ProxyContext, token: object, client: str) -> object | None:
    """A connection slot borrowed on behalf of token for client ("host:port"): the token,
    or None when all are taken or client's address holds its share (net/slots.py; the
    protocol then refuses: SOCKS 0x01 / 0x5B, HTTP 503)."""
    return token if ctx.connection_slots.borrow(token, client) else None


def client_text(address: Any, unknown: str) -> str:
    """host:port or [IPv6]:port of an accepted peer (unknown when it has no such form)."""
    try:
        host, port = address[:2]
    except (TypeError, ValueError):
        return unknown
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ExecutorFront:
    """One per listener set (listeners.Front): the connections its executors hold."""

    def __init__(self, ctx: ProxyContext, spawn: Spawn, served: Served) -> None:
        assert ctx.hub is not None, "the executor needs the context's relay hub"
        self.ctx = ctx
        self.spawn = spawn
        self.served = served
        self.hub: RelayHub = ctx.hub
        self.connections: set[Executor] = set()
        settings = ctx.relay if isinstance(ctx.relay, Relay) else None
        if settings is not None and settings.hub is not self.hub:
            settings = None  # relay() would not use this hub either
        threshold = settings.splice_threshold if settings is not None else None
        # The hub carries the tunnel only where relay() would start it in the hub too.
        self.relay_settings = settings if threshold != 0 else None
        self.threshold = threshold if HAVE_SPLICE else None
        self._emptied: trio.Event | None = None

    @property
    def live(self) -> int:
        return len(self.connections)

    def accepted(self, sock: socket.socket, address: Any) -> None:
        try:
            executor = Executor(self, sock, address)
        except Exception:  # a bug: this connection only
            self.served.logger.exception(
                "%s front end failed on a new connection (a bug in proxy64)", self.served.name
            )
            sock.close()
            return
        try:
            executor.start()
        except Exception as exc:
            executor.bug(exc)

    async def drain(self) -> None:
        try:
            while self.connections:
                self._emptied = trio.Event()
                await self._emptied.wait()
        finally:
            for executor in list(self.connections):
                executor.abort()

    def left(self, connection: ClientSide) -> None:
        self.connections.discard(connection)
        if not self.connections and self._emptied is not None:
            self._emptied.set()


class Executor(RemoteSide):
    """One connection: a hub Watcher, Writer, Timer and TunnelOwner (relay_hub.py)."""

    __slots__ = ()

    def __init__(self, front: ExecutorFront, sock: socket.socket, address: Any) -> None:
        super().__init__(front, sock, client_text(address, "?"))
        ctx = front.ctx
        self.slot = borrow_slot(ctx, self, self.client)
        front.connections.add(self)
        self.machine = front.served.sessions(ctx, self.client, self.slot is not None)

    def start(self) -> None:
        self.now = trio.current_time()
        self.queue.extend(self.machine.start(self.now))
        self._arm(self.machine.deadline)
        self._proceed()

    # --- carrying out commands -------------------------------------------------------------

    def _proceed(self) -> None:
        queue = self.queue
        while queue and self.wait is Wait.NOTHING:
            command = queue.popleft()
            carry_out = _CARRY_OUT.get(type(command)) or _carrier(command)
            carry_out(self, command)
        if self.wait is Wait.NOTHING and self.registered == EPOLLOUT:
            self._want(0)  # only the machine's deadline is awaited now (see _keep_reading)

    def _finish_command(self, command: Finish) -> None:
        self._finish(command.outcome)
        self._drop_dialed()  # a dialed stream ends with its record (HTTP upstream)

    # --- hub callbacks (never raise) ---------------------------------------------------------

    def readable(self, now: float) -> None:
        self.now = now
        try:
            wait = self.wait
            if wait is Wait.READ:
                if self._read():
                    self._proceed()
            elif wait is Wait.LINGER:
                self._linger()
            else:  # bytes (or EOF) for later: they wait in the kernel (see _keep_reading)
                self._want(0)
        except Exception as exc:
            self.bug(exc)

    def writable(self, now: float) -> None:
        self.now = now
        try:
            if self.wait is Wait.WRITE:
                self.wait = Wait.NOTHING
                self._proceed()  # the Send's rest is first in the queue
            elif self.wait is Wait.DIAL:
                # the fd stays watched while the commands that follow run: a wait of
                # theirs on it takes the registration over with one epoll_ctl (MOD)
                pending = self._take_pending(hold=True)
                assert pending is not None
                self.wait = Wait.NOTHING
                try:
                    dialed = self.front.ctx.dialer.finish_now(pending)
                except Proxy64Error as exc:
                    self.front.hub.forget(self.held)  # finish_now closed it
                    self.held = -1
                    self._dial_failed(exc)
                else:
                    self._connected(dialed)
                self._proceed()
                self._release_held()
        except Exception as exc:
            self.bug(exc)

    def expired(self, now: float) -> float | None:
        self.now = now
        try:
            wanted = self.wanted
            if now < wanted:  # set earlier than wanted now
                if wanted == math.inf:
                    self.timer = None
                    return None
                self.timer_at = wanted
                return wanted  # again, the same handle
            self.timer, self.wanted = None, math.inf  # this handle is spent
            self._expired(now)
        except Exception as exc:
            self.bug(exc)
        return None

    def _expired(self, now: float) -> None:
        wait = self.wait
        if wait is Wait.LINGER:
            self._end("closed")
        elif wait is Wait.DIAL:
            pending = self._take_pending()
            assert pending is not None
            self.wait = Wait.NOTHING
            self._dial_failed(self.front.ctx.dialer.abandon(pending))
            self._proceed()
        elif wait is Wait.TUNNEL:
            tunnel, settings = self.tunnel, self.front.relay_settings
            assert tunnel is not None and settings is not None
            again = self.front.hub.expire_idle(tunnel, settings.idle_timeout, now)
            if again is not None:
                self._arm(again)
            elif tunnel.ending is Ending.DONE:
                self._end(f"idle for {settings.idle_timeout:g} s, closed")
        elif wait is Wait.STEPPED:
            self._resume_stepped(trio.TooSlowError())
        elif wait is not Wait.GONE:
            if now < self.machine.deadline:  # the machine moved it after it was armed
                self._arm(self.machine.deadline)
                return
            self._event(Tick(), interrupting=True)
            self._proceed()


# How each session command is carried out, by its type: one dict look-up per command. A
# protocol's own `Await` subclass finds Await's entry through its MRO on its first use.
_CARRY_OUT: dict[type[Any], Callable[[Executor, Any], None]] = {
    Send: Executor._send,
    Receive: Executor._receive,
    Record: Executor._record,
    Dial: Executor._dial,
    RelayCommand: Executor._relay,
    Close: Executor._close,
    Finish: Executor._finish_command,
    Await: Executor._await,
}


def _carrier(command: object) -> Callable[[Executor, Any], None]:
    for kind in type(command).__mro__[1:]:
        carry_out = _CARRY_OUT.get(kind)
        if carry_out is not None:
            _CARRY_OUT[type(command)] = carry_out
            return carry_out
    raise TypeError(f"not a session command: {command!r}")
