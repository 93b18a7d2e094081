"""The relay hub: one task drives every socket-to-socket tunnel's small traffic.

Why: a task per direction costs a spawn, a nursery and a scheduler trip per wait, per
tunnel; an idle tunnel holds their frames. The hub registers both fds of each tunnel in
one epoll set of its own (level-triggered EPOLLIN) and waits on that set's fd through
trio (`wait_readable`), so a single wake-up serves every tunnel that has data, without a
trip per tunnel (the shape of a C proxy's event loop). The tunnel's own task (the front
end's, inside `relay()`) only parks until the tunnel ends or needs more than the hub does.

Invariants:
- Data moves only synchronously here: one read of at most RELAY_CHUNK into a shared
  buffer, one write of it. Nothing is held by the hub between two events except the
  unwritten tail of a write that would block, which is handed over (see below).
- A tunnel leaves the hub ("promoted") when a write would block, or a direction has
  carried `threshold` bytes (bulk: splice(2) takes over): both fds are unregistered
  first, the unwritten tail of each direction goes with it, and the relay's task-based
  path continues from exactly there. No byte is lost or reordered.
- EOF from one side becomes shutdown(SHUT_WR) on the other (RFC 9293 §3.6 half-close);
  the tunnel ends when both directions reached EOF, or a side breaks (reset).
- The hub never raises into its owner's nursery: an unexpected error ends only the
  tunnel it happened on (logged).

The same loop drives the front of a connection: a front end registers a
Watcher for a client fd (`watch`) and gets `readable(now)` calls from this task, and a
Writer for a socket whose connect(2) is in flight (`watch_writable`); timers
(`call_at`: a heap, the earliest deadline bounds the wait on the epoll fd) carry the
handshake and idle timeouts of connections no task waits for. A tunnel may have an owner
instead of a waiting task: the hub tells the owner when it ends or is promoted, and
closes it itself after the owner's idle timeout. After a wake-up the set is polled again
without waiting (up to HUB_POLL_ROUNDS polls, stopping after HUB_EMPTY_POLLS empty ones
in all), so a chain of events (a reply, the peer's answer) costs one trip through trio's
scheduler, not one per event.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import logging
import math
import os
import select
import socket
from typing import Protocol

import trio

from proxy64.defaults import HUB_EMPTY_POLLS, HUB_POLL_ROUNDS, HUB_TIMER_COMPACT, RELAY_CHUNK
from proxy64.net.record import ConnectionRecord
from proxy64.net.resets import broken_outcome, reset_socket_on_close

logger = logging.getLogger(__name__)


class Ending(enum.Enum):
    RUNNING = "running"
    DONE = "done"  # both directions reached EOF (or a side broke: see HubTunnel.broken)
    PROMOTED = "promoted"  # continue on the task-based path (bulk or a blocked write)


AnySocket = socket.socket | trio.socket.SocketType  # the hub uses fileno() and shutdown()


class Watcher(Protocol):
    """A front end's connection whose fd the hub watches (level-triggered EPOLLIN)."""

    def readable(self, now: float) -> None:
        """Called from the hub's task when the fd is readable; must not raise or wait."""
        ...


class Writer(Protocol):
    """A front end's connection waiting for an fd to become writable (EPOLLOUT): a
    non-blocking connect(2) in flight completes, or fails, when its socket is."""

    def writable(self, now: float) -> None:
        """Called from the hub's task when the fd is writable; must not raise or wait."""
        ...


class Duplex(Watcher, Writer, Protocol):
    """A connection whose one fd is watched one direction at a time (RelayHub.switch)."""


class Timer(Protocol):
    def expired(self, now: float) -> float | None:
        """Called at (or after) its deadline: None when done, else the next deadline."""
        ...


class TimerHandle:
    """What call_at() returns: cancel() drops the timer, so the heap entry no longer
    keeps the timer's object (a finished connection) alive, and counts it in the hub,
    which compacts its heap when cancelled entries are the majority (else every ended
    connection's idle deadline would stay in the heap for the whole idle timeout)."""

    __slots__ = ("hub", "timer")

    def __init__(self, timer: Timer, hub: RelayHub) -> None:
        self.timer: Timer | None = timer
        self.hub = hub

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer = None
            self.hub.timer_cancelled()


class TunnelOwner(Protocol):
    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        """A tunnel no task waits for ended (DONE) or left the hub (PROMOTED); its fds
        are unregistered already. Called from the hub's task; must not raise or wait."""
        ...


class HubTunnel:
    """One tunnel while the hub drives it (slots: thousands of these may be idle)."""

    __slots__ = (
        "base_down",
        "base_up",
        "broken",
        "client",
        "client_fd",
        "ending",
        "eof_down",
        "eof_up",
        "last_active",
        "owner",
        "pending_down",
        "pending_up",
        "record",
        "remote",
        "remote_fd",
        "threshold",
        "waiter",
    )

    def __init__(
        self,
        client: AnySocket,
        remote: AnySocket,
        record: ConnectionRecord,
        threshold: int | None,
        now: float,
    ) -> None:
        self.client = client
        self.remote = remote
        self.client_fd = client.fileno()
        self.remote_fd = remote.fileno()
        self.record = record  # bytes_up / bytes_down counted as delivered
        self.threshold = threshold  # promote after carrying this many bytes in the hub
        self.base_up = record.bytes_up  # counts at entry: the threshold is per stay
        self.base_down = record.bytes_down
        self.eof_up = False  # the client's EOF was passed on to the remote
        self.eof_down = False
        self.pending_up = b""  # unwritten tail handed over on promotion
        self.pending_down = b""
        self.broken: str | None = None
        self.ending = Ending.RUNNING
        self.last_active = now
        self.waiter: trio.lowlevel.Task | None = None
        self.owner: TunnelOwner | None = None  # told instead of a waiter when it ends


class RelayHub:
    """Owns one epoll set. Built once by the composition root (app.py) and handed down;
    its owner runs `run` (the proxy server, around all its connections) once, and it
    serves until cancelled: every tunnel and watcher must be gone by then."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fds: dict[int, tuple[HubTunnel, bool]] = {}  # fd → (tunnel, fd is the client)
        self._buffer = bytearray(RELAY_CHUNK)
        self._view = memoryview(self._buffer)
        self._watchers: dict[int, Watcher] = {}
        self._writers: dict[int, Writer] = {}
        self._timers: list[tuple[float, int, TimerHandle]] = []  # heap of (deadline, seq, _)
        self._cancelled = 0  # entries in _timers whose handle was cancelled
        self._sequence = itertools.count()  # ties in the heap never compare timers
        self._wait: trio.CancelScope | None = None  # bounds the wait by the first deadline

    def watch(self, fd: int, watcher: Watcher) -> None:
        """Call watcher.readable() whenever fd is readable, until unwatch(fd). An fd watched
        for writability (a dial that has just completed) is watched for reading instead,
        with one epoll_ctl."""
        if self._writers.pop(fd, None) is not None:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._watchers[fd] = watcher

    def watch_writable(self, fd: int, writer: Writer) -> None:
        """Call writer.writable() once fd is writable (and again while it is), until
        unwatch(fd)."""
        self._epoll.register(fd, select.EPOLLOUT)
        self._writers[fd] = writer

    def switch(self, fd: int, watcher: Duplex, *, writable: bool) -> None:
        """A watched fd is watched for the other direction from now on, with one
        epoll_ctl: readable → writable, or back."""
        if writable:
            del self._watchers[fd]
            self._epoll.modify(fd, select.EPOLLOUT)
            self._writers[fd] = watcher
        else:
            del self._writers[fd]
            self._epoll.modify(fd, select.EPOLLIN)
            self._watchers[fd] = watcher

    def unwatch_writable(self, fd: int) -> None:
        """unwatch(fd) if fd is still watched for writability (watch() or add() may have
        taken its registration over since)."""
        if self._writers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def unwatch(self, fd: int) -> None:
        """Stop watching fd (before it is closed, or handed to a tunnel); idempotent, and
        harmless once the hub has stopped (see remove)."""
        if self._watchers.pop(fd, None) is not None or self._writers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def forget(self, fd: int) -> None:
        """Stop watching fd that the caller closes next, without an epoll_ctl: close(2)
        takes an fd out of every epoll set once no other fd shares its open file (epoll(7));
        proxy64 never duplicates the sockets it watches. Idempotent."""
        if self._watchers.pop(fd, None) is None:
            self._writers.pop(fd, None)

    def call_at(self, deadline: float, timer: Timer) -> TimerHandle:
        """Call timer.expired() once trio's clock reaches deadline (and again at the
        deadline it returns), until it returns None or the handle is cancelled."""
        handle = TimerHandle(timer, self)
        heapq.heappush(self._timers, (deadline, next(self._sequence), handle))
        wait = self._wait
        if wait is not None and deadline < wait.deadline:
            wait.deadline = deadline
        return handle

    def timer_cancelled(self) -> None:
        """One more cancelled entry; past half of the heap (and HUB_TIMER_COMPACT), drop
        them all in place: O(n) once per n/2 cancellations, so the heap stays within twice
        the live timers whatever the connection rate."""
        self._cancelled += 1
        timers = self._timers
        if self._cancelled > HUB_TIMER_COMPACT and 2 * self._cancelled > len(timers):
            timers[:] = [entry for entry in timers if entry[2].timer is not None]
            heapq.heapify(timers)
            self._cancelled = 0

    def add(
        self,
        client: AnySocket,
        remote: AnySocket,
        record: ConnectionRecord,
        threshold: int | None,
        *,
        eof_up: bool = False,
        eof_down: bool = False,
        owner: TunnelOwner | None = None,
    ) -> HubTunnel:
        """Drive a tunnel; eof_up/eof_down: that direction already ended (a tunnel that
        comes back from the task path after going quiet): its source is not watched.
        owner: no task waits (see TunnelOwner); a client fd this hub watches for the
        front end becomes the tunnel's without another epoll_ctl, and a remote fd it
        watches for writability (a dial that has just completed) with one MOD."""
        tunnel = HubTunnel(client, remote, record, threshold, trio.current_time())
        tunnel.eof_up, tunnel.eof_down = eof_up, eof_down
        tunnel.owner = owner
        watched = [(fd, is_client) for fd, is_client, ended in (
            (tunnel.client_fd, True, eof_up), (tunnel.remote_fd, False, eof_down)
        ) if not ended]  # fmt: skip
        if self._watchers.pop(tunnel.client_fd, None) is not None:
            if eof_up:
                self._epoll.unregister(tunnel.client_fd)
            else:
                self._fds[tunnel.client_fd] = (tunnel, True)
                watched = [(fd, is_client) for fd, is_client in watched if not is_client]
        if self._writers.pop(tunnel.remote_fd, None) is not None:  # a dial just completed
            if eof_down:
                self._epoll.unregister(tunnel.remote_fd)
            else:
                self._epoll.modify(tunnel.remote_fd, select.EPOLLIN)
                self._fds[tunnel.remote_fd] = (tunnel, False)
                watched = [(fd, is_client) for fd, is_client in watched if is_client]
        registered: list[int] = []
        try:
            for fd, _ in watched:
                self._epoll.register(fd, select.EPOLLIN)
                registered.append(fd)
        except BaseException:
            for fd in registered:
                self._epoll.unregister(fd)
            raise
        for fd, is_client in watched:
            self._fds[fd] = (tunnel, is_client)
        return tunnel

    def remove(self, tunnel: HubTunnel) -> None:
        """Unregister the tunnel's fds (before they are closed); idempotent.

        Also once the hub has stopped: a shutdown that cancels the server cancels the hub
        and the connections' drain together, so a connection may end after run() closed
        the epoll set (ValueError), with nothing left to unregister."""
        for fd in (tunnel.client_fd, tunnel.remote_fd):
            entry = self._fds.get(fd)
            if entry is not None and entry[0] is tunnel:
                del self._fds[fd]
                # OSError: the fd may be closed already; ValueError: the hub has stopped
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        epoll_fd = self._epoll.fileno()
        task_status.started()
        try:
            while True:
                first = self._timers[0][0] if self._timers else math.inf
                with trio.CancelScope(deadline=first) as self._wait:
                    while True:
                        await trio.lowlevel.wait_readable(epoll_fd)
                        self._serve_ready()
                self._wait = None
                self._fire_timers(trio.current_time())
        finally:
            self._epoll.close()

    def _serve_ready(self) -> None:
        """Every ready fd; then poll again without waiting while events keep coming."""
        fds = self._fds
        empty = 0
        for _ in range(HUB_POLL_ROUNDS):
            events = self._epoll.poll(0)
            if not events:
                empty += 1  # a peer on this host may be about to answer: look again
                if empty > HUB_EMPTY_POLLS:
                    return
                continue
            now = trio.current_time()
            for fd, _ in events:
                entry = fds.get(fd)
                if entry is None:
                    self._notify(fd, now)
                    continue
                tunnel, from_client = entry
                if tunnel.ending is not Ending.RUNNING:
                    continue
                try:
                    self._forward(tunnel, from_client, now)
                except Exception as exc:  # a bug: end this tunnel, keep the hub
                    logger.exception("relay hub failed on a tunnel")
                    tunnel.broken = f"internal error: {exc!r}"
                    self._end(tunnel, Ending.DONE)

    def _notify(self, fd: int, now: float) -> None:
        """The watcher or writer of a ready fd that is not a tunnel's (one at most)."""
        try:
            watcher = self._watchers.get(fd)
            if watcher is not None:
                watcher.readable(now)
                return
            writer = self._writers.get(fd)
            if writer is not None:
                writer.writable(now)
        except Exception:  # a bug: never let it stop the hub
            logger.exception("relay hub: the callback of a watched fd failed")
            self.unwatch(fd)

    def _fire_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, handle = heapq.heappop(timers)
            timer = handle.timer
            if timer is None:  # cancelled
                self._cancelled -= 1
                continue
            try:
                again = timer.expired(now)
            except Exception:
                logger.exception("relay hub: a timer failed")
                continue
            if again is not None and handle.timer is not None:  # not cancelled meanwhile
                heapq.heappush(timers, (again, next(self._sequence), handle))

    def expire_idle(self, tunnel: HubTunnel, idle_timeout: float, now: float) -> float | None:
        """An owned tunnel's idle check (for its owner's Timer): end it (DONE, no owner
        call: the owner is asking) when no byte moved for idle_timeout; else the deadline
        to check again. None when the tunnel is no longer in the hub."""
        if tunnel.ending is not Ending.RUNNING:
            return None
        deadline = tunnel.last_active + idle_timeout
        if now < deadline:
            return deadline
        tunnel.ending = Ending.DONE
        tunnel.owner = None  # see _end
        self.remove(tunnel)
        return None

    def _forward(self, tunnel: HubTunnel, from_client: bool, now: float) -> None:
        src, dst = (
            (tunnel.client_fd, tunnel.remote_fd)
            if from_client
            else (tunnel.remote_fd, tunnel.client_fd)
        )
        try:
            size = os.readv(src, [self._buffer])
        except BlockingIOError:
            return
        except OSError as exc:
            self._break(tunnel, from_client, exc)  # the source broke
            return
        if size == 0:
            self._eof(tunnel, from_client, src)
            return
        tunnel.last_active = now
        try:
            written = os.write(dst, self._view[:size])
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._break(tunnel, not from_client, exc)  # the destination broke
            return
        record = tunnel.record
        if from_client:
            record.bytes_up += written
        else:
            record.bytes_down += written
        if written < size:  # the destination is full: the task path waits for it
            tail = bytes(self._view[written:size])
            if from_client:
                tunnel.pending_up = tail
            else:
                tunnel.pending_down = tail
            self._end(tunnel, Ending.PROMOTED)
            return
        carried = (
            record.bytes_up - tunnel.base_up
            if from_client
            else record.bytes_down - tunnel.base_down
        )
        if tunnel.threshold is not None and carried >= tunnel.threshold:
            self._end(tunnel, Ending.PROMOTED)  # bulk: splice(2) from here on

    def promote(self, tunnel: HubTunnel) -> None:
        """Hand a running tunnel to the task path now (its owner or waiter is told)."""
        if tunnel.ending is Ending.RUNNING:
            self._end(tunnel, Ending.PROMOTED)

    def _eof(self, tunnel: HubTunnel, from_client: bool, src: int) -> None:
        del self._fds[src]
        self._epoll.unregister(src)  # level-triggered EOF would fire forever
        if from_client:
            tunnel.eof_up = True
        else:
            tunnel.eof_down = True
        if tunnel.eof_up and tunnel.eof_down:
            self._end(tunnel, Ending.DONE)  # close() right after sends this FIN
            return
        try:
            (tunnel.remote if from_client else tunnel.client).shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._break(tunnel, not from_client, exc)

    def _break(self, tunnel: HubTunnel, at_client: bool, exc: OSError) -> None:
        """The client's side (at_client) or the remote's broke: the other is closed with RST."""
        tunnel.broken = broken_outcome(at_client, exc)
        reset_socket_on_close(tunnel.remote if at_client else tunnel.client)
        self._end(tunnel, Ending.DONE)

    def _end(self, tunnel: HubTunnel, ending: Ending) -> None:
        tunnel.ending = ending
        self.remove(tunnel)
        waiter, tunnel.waiter = tunnel.waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)
        elif tunnel.owner is not None:
            # The owner holds the tunnel: dropping the link back leaves no cycle, so an
            # ended connection is freed by reference counting at once instead of waiting,
            # with everything it holds, for a full collection of the cyclic GC (whose
            # pauses grow with the whole heap and stall every connection at once).
            owner, tunnel.owner = tunnel.owner, None
            owner.tunnel_ended(tunnel)


async def wait_for(tunnel: HubTunnel, idle_timeout: float) -> bool:
    """Park until the hub ends or promotes the tunnel; False when it idled out.

    Any byte moved pushes the deadline (last_active + idle_timeout)."""
    while tunnel.ending is Ending.RUNNING:
        deadline = tunnel.last_active + idle_timeout
        if trio.current_time() >= deadline:
            return False
        with trio.move_on_at(deadline):
            tunnel.waiter = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                tunnel.waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
    return True
