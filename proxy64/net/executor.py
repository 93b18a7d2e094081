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

import enum
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from select import EPOLLIN, EPOLLOUT
from typing import Any, Protocol

import trio

from proxy64.destination import Destination
from proxy64.errors import Proxy64Error
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.listeners import FrontOpener, Spawn
from proxy64.net.outcomes import client_lost
from proxy64.net.relay import Relay, relay
from proxy64.net.relay_hub import Ending, HubTunnel, RelayHub, TimerHandle
from proxy64.net.resets import broken_outcome, reset_socket_on_close
from proxy64.net.splice import HAVE_SPLICE
from proxy64.proto.session import (
    Await,
    ClientLost,
    Close,
    Command,
    Connected,
    DataReceived,
    Dial,
    DialFailed,
    Event,
    Finish,
    Receive,
    Record,
    Send,
    SessionMachine,
    Tick,
)
from proxy64.proto.session import Relay as RelayCommand

SHUTDOWN_OUTCOME = "cancelled (proxy64 is shutting down)"


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


@dataclass(frozen=True)
class Served:
    """What a protocol gives the executor: its name for log lines, its logger, the
    machine for each client, one helper per `Await` subclass it uses, how much to read
    per Receive, and the outcome of a connection a bug ended ("{exc!r}" may be used)."""

    name: str
    sessions: SessionFactory
    logger: logging.Logger
    read_size: int
    helpers: Mapping[type[Await], AwaitHelper] = field(default_factory=dict)
    bug_outcome: str = "internal error: {exc!r}"

    def opener(self) -> FrontOpener:
        """The listeners.FrontOpener for this protocol (what app.py puts in Listening)."""
        return lambda ctx, spawn: ExecutorFront(ctx, spawn, self)


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

    def left(self, executor: Executor) -> None:
        self.connections.discard(executor)
        if not self.connections and self._emptied is not None:
            self._emptied.set()


class Wait(enum.Enum):
    NOTHING = "nothing"  # carrying out commands, or waiting for the machine's deadline
    READ = "read"  # a Receive: the client's fd is watched for readability
    WRITE = "write"  # a Send's rest: the client's fd is watched for writability
    DIAL = "dial"  # a connect(2) in flight: its fd is watched for writability
    TASK = "task"  # a task holds the connection (a dial awaited, a helper, a relay)
    TUNNEL = "tunnel"  # an owned hub tunnel
    LINGER = "linger"  # half-closed, draining what the client sends, then closing
    GONE = "gone"


class Executor:
    """One connection: a hub Watcher, Writer, Timer and TunnelOwner (relay_hub.py)."""

    __slots__ = (
        "aborting",
        "client",
        "dialed",
        "drained",
        "fd",
        "front",
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
        "stream",
        "timer",
        "timer_at",
        "tunnel",
        "turn",
        "wait",
        "wanted",
    )

    def __init__(self, front: ExecutorFront, sock: socket.socket, address: Any) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as trio.SocketStream
        self.front = front
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client_text(address, "?")
        self.record: ConnectionRecord | None = None
        self.dialed: Dialed | None = None
        self.pending: PendingDial | None = None
        self.tunnel: HubTunnel | None = None
        self.stream: trio.SocketStream | None = None  # the client as a task sees it
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
            if isinstance(command, Send):
                self._send(command.data)
            elif isinstance(command, Receive):
                self._receive()
            elif isinstance(command, Record):
                self._record(command)
            elif isinstance(command, Dial):
                self._dial(command.destination)
            elif isinstance(command, RelayCommand):
                self._relay(command.early)
            elif isinstance(command, Close):
                self._close(command)
            elif isinstance(command, Finish):
                self._finish(command.outcome)
            elif isinstance(command, Await):
                self._await(command)
            else:
                raise TypeError(f"not a session command: {command!r}")
        if self.wait is Wait.NOTHING and self.registered == EPOLLOUT:
            self._want(0)  # only the machine's deadline is awaited now (see _keep_reading)

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

    def _send(self, data: bytes) -> None:
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

    def _receive(self) -> None:
        # Bytes that came before anything was sent are often there already (a greeting
        # with the connection); after a Send the client has to answer it first.
        if not self.sent and self._read():
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

    # --- the dial ----------------------------------------------------------------------------

    def _dial(self, destination: Destination) -> None:
        try:
            result = self.front.ctx.dialer.connect_now(destination, self.client)
        except Proxy64Error as exc:
            self._dial_failed(exc)
            return
        except OSError as exc:  # the dialer should have typed it; still answer
            self._dial_failed(Proxy64Error(f"cannot connect to {destination}: {exc}"))
            return
        if result is None:  # a name to resolve, a race: a task awaits the dialer
            self._keep_reading()
            self._spawn(self._dial_task, destination)
        elif isinstance(result, PendingDial):  # in flight: the hub waits for writability
            self._keep_reading()
            self.pending = result
            self.wait = Wait.DIAL
            self.front.hub.watch_writable(result.sock.fileno(), self)
            self._arm(result.deadline)
        else:
            self._connected(result)

    async def _dial_task(self, destination: Destination) -> None:
        turn = self.turn
        error: Proxy64Error | None = None
        try:
            dialed = await self.front.ctx.dialer.connect(destination, self.client)
        except Proxy64Error as exc:
            error = exc
        except OSError as exc:
            error = Proxy64Error(f"cannot connect to {destination}: {exc}")
        if self.turn != turn or self.wait is not Wait.TASK:  # interrupted, or ended
            if error is None:
                _close(dialed)
            return
        self.now = trio.current_time()
        self.wait = Wait.NOTHING
        if error is not None:
            self._dial_failed(error)
        else:
            self._connected(dialed)
        self._proceed()

    def _take_pending(self) -> PendingDial | None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self.front.hub.unwatch(pending.sock.fileno())
        return pending

    def _connected(self, dialed: Dialed) -> None:
        self.dialed = dialed
        if self.record is not None:
            self.record.reached_by(dialed)
        self._event(Connected(dialed.local))

    def _dial_failed(self, error: Proxy64Error) -> None:
        if self.record is not None:
            self.record.failed(error)
        self._event(DialFailed(error))

    # --- the tunnel --------------------------------------------------------------------------

    def _relay(self, early: bytes) -> None:
        dialed, front = self.dialed, self.front
        assert dialed is not None, "Relay before a Connected dial"
        remote = dialed.stream
        if front.relay_settings is None or not isinstance(remote, trio.SocketStream):
            self._arm(math.inf)
            self._want(0)
            self._spawn(self._relay_task, early, None)  # a relay the hub cannot carry
            return
        written = 0
        if early:
            try:
                written = os.write(remote.socket.fileno(), early)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._end(broken_outcome(False, exc))
                return
            if self.record is not None:
                self.record.bytes_up += written
        if self.registered == EPOLLOUT:
            self._want(0)
        record = self.record
        assert record is not None, "Relay without a record"
        # a client fd the hub watches becomes the tunnel's without another epoll_ctl
        tunnel = front.hub.add(self.sock, remote.socket, record, front.threshold, owner=self)
        self.registered = 0
        self.tunnel = tunnel
        self.wait = Wait.TUNNEL
        if written < len(early):  # the rest goes from the relay's task path
            tunnel.pending_up = early[written:]
            front.hub.promote(tunnel)
            return
        settings = front.relay_settings
        self._arm(tunnel.last_active + settings.idle_timeout)

    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        try:
            if self.wait is not Wait.TUNNEL:
                return
            self._arm(math.inf)
            if tunnel.ending is Ending.PROMOTED:  # bulk, or a full side: relay()'s task path
                self._spawn(self._relay_task, b"", tunnel)
                return
            if tunnel.broken:
                self.front.served.logger.debug("tunnel %s: %s", self.client, tunnel.broken)
            self._end(tunnel.broken or "ok")
        except Exception as exc:
            self.bug(exc)

    async def _relay_task(self, early: bytes, promoted: HubTunnel | None) -> None:
        """The tunnel in a task: relay() from a promoted hub tunnel's tails, or ctx.relay
        when the hub cannot carry it; the connection ends here."""
        front, record, dialed = self.front, self.record, self.dialed
        assert record is not None and dialed is not None
        client = self._stream()
        scope = self.scope
        try:
            if promoted is not None:
                settings = front.relay_settings
                assert settings is not None
                await relay(
                    client,
                    dialed.stream,
                    record,
                    idle_timeout=settings.idle_timeout,
                    splice_threshold=settings.splice_threshold,
                    splice_release_after=settings.splice_release_after,
                    promoted=promoted,
                    hub=front.hub,
                )
            else:
                if early:  # optimistic clients send their first bytes with the request
                    await dialed.stream.send_all(early)
                    record.bytes_up += len(early)
                await front.ctx.relay(client, dialed.stream, record)
            if record.outcome == "open" and not (scope and scope.cancel_called):
                record.outcome = "ok"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if record.outcome == "open":
                record.outcome = client_lost(exc)
        finally:
            self._end(SHUTDOWN_OUTCOME)

    # --- a protocol's own awaited step -------------------------------------------------------

    def _await(self, command: Await) -> None:
        helper = self.front.served.helpers[type(command)]
        self._want(0)
        self._spawn(self._helper_task, helper, command)

    async def _helper_task(self, helper: AwaitHelper, command: Await) -> None:
        turn, record = self.turn, self.record
        try:
            event = await helper(command, self._stream(), record, self.front.ctx)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._end(client_lost(exc))
            return
        if self.turn != turn or self.wait is not Wait.TASK:
            return
        if event is None:
            self._end("ok")
            return
        self.now = trio.current_time()
        self.wait = Wait.NOTHING
        self._event(event)
        self._proceed()

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
            self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(self.sock))
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
            hub.unwatch(self.fd)
            self.registered = 0
        pending = self.pending
        if pending is not None:  # ended while dialing (shutdown): never leak it
            self.pending = None
            hub.unwatch(pending.sock.fileno())
            pending.sock.close()
        if self.tunnel is not None:
            hub.remove(self.tunnel)
        if self.timer is not None:  # else the heap entry keeps this connection alive
            self.timer.cancel()
            self.timer = None
        dialed, self.dialed = self.dialed, None
        if dialed is not None:
            _close(dialed)
        if self.stream is not None:
            self.stream.socket.close()  # trio's close: it may have waited on the fd
        else:
            self.sock.close()
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
                pending = self._take_pending()
                assert pending is not None
                self.wait = Wait.NOTHING
                try:
                    dialed = self.front.ctx.dialer.finish_now(pending)
                except Proxy64Error as exc:
                    self._dial_failed(exc)
                else:
                    self._connected(dialed)
                self._proceed()
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
        elif wait is not Wait.GONE:
            if now < self.machine.deadline:  # the machine moved it after it was armed
                self._arm(self.machine.deadline)
                return
            self._event(Tick(), interrupting=True)
            self._proceed()

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


def _close(dialed: Dialed) -> None:
    stream = dialed.stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
