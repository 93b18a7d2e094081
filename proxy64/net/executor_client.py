"""The client's side of one connection the executor (net/executor.py) serves: its socket
(read, write, the watch for one direction at a time), the command queue, the record, the
one hub timer, the tasks that hold the connection, and how it ends (close, linger, reset).
The remote side (dial, tunnel, awaited steps) is executor_remote.py; executor.py puts
them together with the hub's callbacks.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from select import EPOLLIN, EPOLLOUT
from typing import Any, Protocol

import trio

from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial, close_socket, stream_over
from proxy64.net.listeners import Spawn
from proxy64.net.outcomes import client_lost
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import HubTunnel, RelayHub, TimerHandle
from proxy64.net.resets import reset_socket_on_close
from proxy64.proto.session import (
    ClientLost,
    Close,
    Command,
    DataReceived,
    Event,
    Receive,
    Record,
    Send,
    SessionMachine,
)

SHUTDOWN_OUTCOME = "cancelled (proxy64 is shutting down)"


class SessionFactory(Protocol):
    def __call__(self, ctx: ProxyContext, client: str, have_slot: bool) -> SessionMachine:
        """The machine for one accepted client ("host:port"); have_slot: whether it holds
        a --max-connections slot (else the machine refuses it its protocol's way)."""
        ...


class AwaitHelper(Protocol):
    def __call__(
        self,
        command: Any,
        client: trio.SocketStream,
        record: ConnectionRecord | None,
        ctx: ProxyContext,
    ) -> Awaitable[Event | None]:
        """Carry out a protocol's `Await` command in a task: the event to feed back, or
        None when the connection is over (its outcome set in record)."""
        ...


class DialedHelper(Protocol):
    def __call__(
        self,
        command: Any,
        client: socket.socket,
        record: ConnectionRecord | None,
        ctx: ProxyContext,
        *,
        dialed: Dialed,
        stream: Callable[[], trio.SocketStream],
    ) -> Awaitable[Event | None]:
        """An `AwaitHelper` that works on the connection's dialed stream (the last
        `Dial` that was `Connected`: HTTP forwarding's upstream). It is given the client's
        non-blocking socket, to read and write on its fd, and `stream()`, the same socket
        as a trio stream, made on the first call (only a step that needs one pays for it:
        trio's wrapper costs set-up syscalls now and an epoll_ctl at close)."""
        ...


class ServedLike(Protocol):
    """What a connection reads of its protocol's executor.Served."""

    @property
    def name(self) -> str: ...
    @property
    def sessions(self) -> SessionFactory: ...
    @property
    def logger(self) -> logging.Logger: ...
    @property
    def read_size(self) -> int: ...
    @property
    def helpers(self) -> Mapping[type[Any], AwaitHelper]: ...
    @property
    def dialed_helpers(self) -> Mapping[type[Any], DialedHelper]: ...
    @property
    def stepped_helpers(self) -> Mapping[type[Any], DialedHelper]: ...
    @property
    def bug_outcome(self) -> str: ...


class FrontLike(Protocol):
    """What a connection reads of its listener's front (executor.ExecutorFront)."""

    @property
    def ctx(self) -> ProxyContext: ...
    @property
    def spawn(self) -> Spawn: ...
    @property
    def served(self) -> ServedLike: ...
    @property
    def hub(self) -> RelayHub: ...
    @property
    def relay_settings(self) -> Relay | None:
        """None: the hub cannot carry the tunnel (relay() in a task)."""
        ...

    @property
    def threshold(self) -> int | None:
        """The hub tunnel's splice threshold."""
        ...

    def left(self, connection: ClientSide) -> None: ...


class Wait(enum.Enum):
    NOTHING = "nothing"  # carrying out commands, or waiting for the machine's deadline
    READ = "read"  # a Receive: the client's fd is watched for readability
    WRITE = "write"  # a Send's rest: the client's fd is watched for writability
    DIAL = "dial"  # a connect(2) in flight: its fd is watched for writability
    TASK = "task"  # a task holds the connection (a dial awaited, a helper, a relay)
    STEPPED = "stepped"  # a stepped helper waits in the hub for the dialed socket
    TUNNEL = "tunnel"  # an owned hub tunnel
    LINGER = "linger"  # half-closed, draining what the client sends, then closing
    GONE = "gone"


class _NoMachine:
    """Before the front gives the connection its machine, and once a Relay has made it a
    tunnel (never fed then: the tunnel's life is the executor's, and an idle tunnel must
    not keep its handshake's parser and buffers)."""

    deadline = math.inf

    def start(self, now: float) -> list[Command]:
        raise AssertionError("no session machine yet")

    def handle(self, event: Event, now: float) -> list[Command]:
        raise AssertionError("no session machine yet")


NO_MACHINE = _NoMachine()


class ClientSide:
    """The client's side of one connection: its socket, the command queue, the one hub
    timer, tasks, and its end (see net/executor.py)."""

    __slots__ = (
        "aborting",
        "bound_wanted",
        "client",
        "dialed",
        "drained",
        "fd",
        "front",
        "held",
        "linger_bytes",
        "machine",
        "now",
        "pending",
        "queue",
        "record",
        "registered",
        "scope",
        "sent",
        "slot",
        "sock",
        "stepped",
        "stream",
        "timer",
        "timer_at",
        "tunnel",
        "turn",
        "wait",
        "wanted",
    )

    def __init__(self, front: FrontLike, sock: socket.socket, client: str) -> None:
        sock.setblocking(False)  # TCP_NODELAY comes from the listener (listeners.py)
        self.front = front
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.record: ConnectionRecord | None = None
        self.dialed: Dialed | None = None
        self.bound_wanted = False  # the current Dial asked for the socket's own address
        self.pending: PendingDial | None = None
        # the fd of a dial that completed in flight, still watched by the hub for
        # writability while the commands that follow run: the connection's next wait on
        # it takes the registration over (hub.watch, hub.add: one MOD), else it is dropped
        self.held = -1
        self.tunnel: HubTunnel | None = None
        self.stream: trio.SocketStream | None = None  # the client as a task sees it
        # a stepped helper waiting in the hub: its coroutine and the fd it waits for
        self.stepped: tuple[Coroutine[Any, Any, Any], int] | None = None
        self.scope: trio.CancelScope | None = None  # the task holding the connection
        self.queue: deque[Command] = deque()
        self.wait = Wait.NOTHING
        self.registered = 0  # EPOLLIN, EPOLLOUT or 0: how the hub watches self.fd
        self.sent = False  # a Send since the last read
        self.timer: TimerHandle | None = None
        self.timer_at = math.inf  # when the hub calls the timer
        self.wanted = math.inf  # when the executor wants it called
        self.turn = 0  # +1 on each interruption and task: only the latest task holds it
        self.drained = self.linger_bytes = 0
        self.aborting = False
        self.now = 0.0  # the hub's (trio's) clock at the callback or task step under way
        self.slot: object | None = None  # the --max-connections slot, given by the front
        self.machine: SessionMachine = NO_MACHINE

    # --- what executor.Executor provides -------------------------------------------------

    def _proceed(self) -> None:
        """Carry out the queued commands."""
        raise NotImplementedError

    def readable(self, now: float) -> None:
        raise NotImplementedError

    def writable(self, now: float) -> None:
        raise NotImplementedError

    def expired(self, now: float) -> float | None:
        raise NotImplementedError

    def _event(self, event: Event, *, interrupting: bool = False) -> None:
        """Feed the machine; what it answers is queued (or replaces the queue)."""
        machine = self.machine
        commands = machine.handle(event, self.now)
        if interrupting and commands:
            self._interrupt()
            self.queue.clear()
        self.queue.extend(commands)
        deadline = machine.deadline
        if deadline != self.wanted:
            wait = self.wait  # the waits the machine's deadline times (others have their own)
            if wait is Wait.NOTHING or wait is Wait.READ or wait is Wait.WRITE or wait is Wait.TASK:
                self._arm(deadline)

    def _interrupt(self) -> None:
        """Stop waiting for what the executor waited for (the machine changed its mind)."""
        self.turn += 1
        wait, self.wait = self.wait, Wait.NOTHING
        if wait is Wait.DIAL:
            pending = self._take_pending()
            if pending is not None:
                pending.sock.close()
        elif wait is Wait.TASK and self.scope is not None:
            self.scope.cancel()
        elif wait is Wait.STEPPED:
            self._drop_stepped()

    def _drop_stepped(self) -> None:
        """A stepped helper waiting in the hub is abandoned: its watch and its coroutine."""
        stepped, self.stepped = self.stepped, None
        if stepped is not None:
            coro, fd = stepped
            self.front.hub.unwatch(fd)
            coro.close()

    def _keep_reading(self) -> None:
        """While the executor waits for something else, a client fd watched for reading
        stays so (the tunnel takes the registration over without epoll_ctl); should the
        client send or close meanwhile, readable() stops watching it then. A watch for
        writability ends now (writable() would take it for the dial's)."""
        if self.registered == EPOLLOUT:
            self._want(0)

    def _want(self, mode: int) -> None:
        """Watch the client's fd for mode (EPOLLIN, EPOLLOUT, 0: not at all)."""
        have = self.registered
        if have == mode:
            return
        hub = self.front.hub
        if mode == 0:
            hub.unwatch(self.fd)
        elif have == 0:
            if mode == EPOLLIN:
                hub.watch(self.fd, self)
            else:
                hub.watch_writable(self.fd, self)
        else:
            hub.switch(self.fd, self, writable=mode == EPOLLOUT)
        self.registered = mode

    def _send(self, command: Send) -> None:
        data = command.data
        self.sent = True
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._lost(exc)
            return
        if written < len(data):
            self.queue.appendleft(Send(data[written:]))
            self.wait = Wait.WRITE
            self._want(EPOLLOUT)

    def _lost(self, exc: OSError) -> None:
        self._event(ClientLost(client_lost(exc)), interrupting=True)

    def _receive(self, command: Receive) -> None:
        # Bytes that came before anything was sent are often there already (a greeting
        # with the connection); after a Send, or an answer the machine says was given, the
        # client has to answer it first: a read now would find nothing (EAGAIN).
        if not (self.sent or command.answered) and self._read():
            return
        self._want(EPOLLIN)
        self.wait = Wait.READ

    def _read(self) -> bool:
        """One read fed to the machine; False when nothing is there yet."""
        try:
            data = os.read(self.fd, self.front.served.read_size)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.wait = Wait.NOTHING
            self._lost(exc)
            return True
        self.wait = Wait.NOTHING
        self.sent = False
        self._event(DataReceived(data))
        return True

    def _record(self, command: Record) -> None:
        record = self.record
        if record is None:
            self.record = ConnectionRecord(
                command.front_end, self.client, destination=command.destination
            )
            self.record.started -= command.waited
            return
        record.front_end = command.front_end
        if command.destination is not None:
            record.destination = command.destination

    def _finish(self, outcome: str) -> None:
        record, self.record = self.record, None
        if record is not None:
            if record.outcome == "open":
                record.outcome = outcome
            self.front.ctx.recorder.finish(record)

    def _take_pending(self, *, hold: bool = False) -> PendingDial | None:
        """The dial in flight, no longer waited for; hold: its fd stays watched (held) for
        what comes next to take over (see _release_held)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            if hold:
                self.held = pending.sock.fileno()
            else:
                self.front.hub.unwatch(pending.sock.fileno())
        return pending

    def _release_held(self) -> None:
        """The held fd's watch ends unless a watch of its own took it over."""
        held, self.held = self.held, -1
        if held >= 0:
            self.front.hub.unwatch_writable(held)

    # --- tasks -------------------------------------------------------------------------------

    def _spawn(self, async_fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Hand the connection to a new task (its turn: an earlier task stops holding it)."""
        self.wait = Wait.TASK
        self.turn += 1
        self.front.spawn(self._task, self.turn, async_fn, *args)

    async def _task(
        self, turn: int, async_fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Hold the connection in a task: cancellable by an interruption or abort(); a
        task that neither handed the connection back nor ended it ends it."""
        if self.turn != turn or self.wait is not Wait.TASK:
            return  # interrupted or ended before the task started
        scope = self.scope = trio.CancelScope()
        try:
            with scope:
                await async_fn(*args)
        except Exception as exc:
            self.bug(exc)
        finally:
            if self.scope is scope:
                self.scope = None
            if self.turn == turn and self.wait is Wait.TASK:
                self._end(SHUTDOWN_OUTCOME)

    def _stream(self) -> trio.SocketStream:
        """The client as a stream for a task (the same fd: nothing is buffered)."""
        if self.stream is None:
            self.stream = stream_over(self.sock)
        return self.stream

    # --- closing -----------------------------------------------------------------------------

    def _close(self, command: Close) -> None:
        record = self.record
        if record is not None and record.outcome == "open":
            record.outcome = command.outcome
        self._arm(math.inf)
        if command.reset:
            reset_socket_on_close(self.sock)
        elif command.linger:
            try:  # RFC 9293 §3.6: our FIN; what the client still sends is drained
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._end(command.outcome)
                return
            self.wait = Wait.LINGER
            self.drained, self.linger_bytes = 0, command.linger_bytes
            self._want(EPOLLIN)
            self._arm(self.now + command.linger_time)
            return
        self._end(command.outcome)

    def _linger(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.drained += len(data)
        if not data or self.drained >= self.linger_bytes:
            self._end("closed")

    def _end(self, outcome: str) -> None:
        """End once: watchers and timer gone, sockets closed, slot back, the open record
        finished with outcome unless it has one already."""
        if self.wait is Wait.GONE:
            return
        self.wait = Wait.GONE
        hub = self.front.hub
        if self.registered:
            hub.forget(self.fd)  # closed below
            self.registered = 0
        pending = self.pending
        if pending is not None:  # ended while dialing (shutdown): never leak it
            self.pending = None
            hub.unwatch(pending.sock.fileno())
            pending.sock.close()
        if self.tunnel is not None:
            hub.remove(self.tunnel)
        self._drop_stepped()  # before the dialed socket it watches is closed
        if self.timer is not None:  # else the heap entry keeps this connection alive
            self.timer.cancel()
            self.timer = None
        self._release_held()
        dialed, self.dialed = self.dialed, None
        if dialed is not None:
            dialed.close()
        close_socket(self.sock, self.stream)
        slot, self.slot = self.slot, None
        if slot is not None:
            self.front.ctx.connection_slots.release_on_behalf_of(slot)
        self._finish(outcome)
        self.front.left(self)

    def bug(self, exc: Exception) -> None:
        """A bug ends this connection only (logged, record finished)."""
        served = self.front.served
        served.logger.exception(
            "%s front end failed for %s (a bug in proxy64)", served.name, self.client
        )
        try:
            self._end(served.bug_outcome.format(exc=exc))
        except Exception:  # pragma: no cover - the last resort must not raise either
            served.logger.exception("%s front end could not end %s", served.name, self.client)

    def abort(self) -> None:
        """Shutdown ran out of grace: end now (a task's connection, through its task)."""
        self.aborting = True
        if self.wait is Wait.TASK and self.scope is not None:
            self.scope.cancel()
        else:
            self._end(SHUTDOWN_OUTCOME)

    def _arm(self, deadline: float) -> None:
        """The one hub timer, wanted at deadline (math.inf: none). A timer already set
        earlier is kept: when it fires it is set again for what is wanted then, so a
        deadline moved later costs no heap operation now."""
        self.wanted = deadline
        if self.timer is not None:
            if self.timer_at <= deadline:
                return
            self.timer.cancel()
            self.timer = None
        if deadline != math.inf:
            self.timer_at = deadline
            self.timer = self.front.hub.call_at(deadline, self)
