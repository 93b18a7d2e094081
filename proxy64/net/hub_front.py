"""The hub-driven connection life of the HTTP CONNECT front end (http_front.py), until
HTTP is served by the one executor (net/executor.py) as SOCKS is: no trio task for a
connection that need not wait; http_front.py adds feeding its sans-I/O machine, the
reply, what a Resume holds and how the task path is entered.

An accepted client is a Watcher in the relay hub's epoll set (proxy64/net/relay_hub.py).
Its life, the same for every protocol: a --max-connections slot borrowed on its behalf;
the handshake deadline as a hub timer; the protocol's machine fed synchronously when the
fd is readable; then either an owned hub tunnel (its idle timeout on the same timer,
checked against its last byte) or a hand-off to the task path with what was consumed.

Invariants:
- Each connection ends exactly once: _end() here, or on the task path after it left
  `connections` (a hand-off, or _continue() for a tunnel the hub promoted).
- A connection that leaves cancels its timer, so the hub's pending heap entry does not
  keep it (and its machine) alive until the deadline.
- A bug in a hub callback ends that connection only (logged; the hub goes on).
- drain() (at shutdown) waits for the connections; cancelled, it ends them.
"""

from __future__ import annotations

import enum
import logging
import socket
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import trio

from proxy64.errors import Proxy64Error
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.executor import SHUTDOWN_OUTCOME, borrow_slot, client_text
from proxy64.net.listeners import Spawn
from proxy64.net.relay import Relay, relay
from proxy64.net.relay_hub import AnySocket, Ending, HubTunnel, TimerHandle
from proxy64.net.splice import HAVE_SPLICE

__all__ = [
    "SHUTDOWN_OUTCOME",
    "HubConnection",
    "HubFront",
    "Stage",
    "borrow_slot",
    "client_text",
]


class Stage(enum.Enum):
    HANDSHAKE = "handshake"  # the hub watches the client fd (SOCKS handshake, HTTP head)
    DIALING = "dialing"  # the hub watches the remote fd until its connect(2) completes
    TUNNEL = "tunnel"  # an owned hub tunnel
    GONE = "gone"  # ended, or handed to a task


C = TypeVar("C", bound="HubConnection")


class HubFront(Generic[C]):
    """One per listener set (listeners.Front): the connections held without a task."""

    def __init__(
        self,
        ctx: ProxyContext,
        spawn: Spawn,
        connection: Callable[[Any, socket.socket, Any], C],
        name: str,
        log: logging.Logger,
    ) -> None:
        self.ctx = ctx
        self.spawn = spawn
        assert ctx.hub is not None, "a hub-driven front end needs the context's relay hub"
        self.hub = ctx.hub
        self.connections: set[C] = set()
        self.connect_now = ctx.dialer.connect_now
        self.name = name  # "SOCKS", "HTTP": for log lines
        self.logger = log  # the protocol module's: log lines keep their logger name
        self._connection = connection
        settings = ctx.relay if isinstance(ctx.relay, Relay) else None
        if settings is not None and settings.hub is not self.hub:
            settings = None  # relay() would not use this hub either
        threshold = settings.splice_threshold if settings is not None else None
        # The hub carries the tunnel only where relay() would start it in the hub too.
        self.relay_settings = settings if threshold != 0 else None
        self.threshold = threshold if HAVE_SPLICE else None
        self.handed_off = 0  # connections resumed on the task path (tests, profiling)
        self.served = 0  # connections that ended without ever having a task
        self._emptied: trio.Event | None = None

    @property
    def live(self) -> int:
        return len(self.connections)

    def accepted(self, sock: socket.socket, address: Any) -> None:
        try:
            connection = self._connection(self, sock, address)
        except Exception:  # a bug: this connection only
            self.logger.exception(
                "%s front end failed on a new connection (a bug in proxy64)", self.name
            )
            sock.close()
            return
        try:
            connection.start()
        except Exception as exc:
            connection._bug(exc)

    async def drain(self) -> None:
        try:
            while self.connections:
                self._emptied = trio.Event()
                await self._emptied.wait()
        finally:
            for connection in list(self.connections):
                connection.abort()

    def left(self, connection: C) -> None:
        self.connections.discard(connection)
        if not self.connections and self._emptied is not None:
            self._emptied.set()


class HubConnection:
    """One client while no task holds it: a hub Watcher, Timer and TunnelOwner. A
    protocol subclass provides start(), _readable(), _timed_out() and _hand_off()."""

    __slots__ = (
        "client",
        "deadline",
        "dialed",
        "fd",
        "front",
        "pending",
        "record",
        "slot",
        "sock",
        "stage",
        "timer",
        "tunnel",
    )

    # the record's outcome when a bug ends the connection ("{exc!r}" may be used)
    bug_outcome: ClassVar[str] = "internal error: {exc!r}"

    def __init__(
        self,
        front: HubFront[Any],
        sock: socket.socket,
        client: str,
        record: ConnectionRecord | None,
    ) -> None:
        self.front = front
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.record = record  # None: no record line unless the protocol makes one
        self.dialed: Dialed | None = None
        self.pending: PendingDial | None = None  # the dial in flight (Stage.DIALING)
        self.tunnel: HubTunnel | None = None
        self.stage = Stage.HANDSHAKE
        ctx = front.ctx
        self.slot = borrow_slot(ctx, self, client)
        self.deadline = trio.current_time() + ctx.handshake_timeout
        self.timer: TimerHandle | None = None  # the handshake deadline, then the idle check
        front.connections.add(self)

    # --- the protocol's part -------------------------------------------------------------

    def start(self) -> None:
        raise NotImplementedError

    def _readable(self) -> None:
        raise NotImplementedError

    def _timed_out(self) -> None:
        """The handshake deadline passed: answer (or not) and end or hand off."""
        raise NotImplementedError

    def _relay_lost(self, exc: BaseException) -> str:
        """The outcome when a promoted tunnel's relay() broke."""
        raise NotImplementedError

    def _dial_done(self, dialed: Dialed) -> None:
        """The dial _dial_in_hub() waited for connected: reply and tunnel."""
        raise NotImplementedError

    def _dial_failed(self, error: Proxy64Error) -> None:
        """The dial _dial_in_hub() waited for failed or timed out: refuse."""
        raise NotImplementedError

    def _begin(self) -> None:
        """Read what is there already (the greeting or head often is); still in the
        handshake after that, the hub watches the fd and the deadline."""
        self._readable()
        if self.stage is Stage.HANDSHAKE:
            hub = self.front.hub
            hub.watch(self.fd, self)
            self.timer = hub.call_at(self.deadline, self)

    def _dial_in_hub(self, pending: PendingDial) -> None:
        """Wait in the hub, not in a task, for a connect(2) in flight (every dial on a real
        network): the remote fd is watched for writability until the dial's deadline.
        Meanwhile the client's fd is not read (what it sends waits in the kernel, for the
        tunnel); the handshake is over, so its deadline no longer applies."""
        hub = self.front.hub
        hub.unwatch(self.fd)
        self.pending = pending
        self.stage = Stage.DIALING
        hub.watch_writable(pending.sock.fileno(), self)
        if self.timer is not None:
            self.timer.cancel()
        self.timer = hub.call_at(pending.deadline, self)

    def _take_pending(self) -> PendingDial | None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self.front.hub.unwatch(pending.sock.fileno())
        return pending

    def _connected(self) -> None:
        pending = self._take_pending()
        if pending is None or self.stage is not Stage.DIALING:
            return
        try:
            dialed = self.front.ctx.dialer.finish_now(pending)
        except Proxy64Error as exc:
            self._dial_failed(exc)
            return
        self._dial_done(dialed)

    # --- hub callbacks: a bug ends this connection only ------------------------------------

    def readable(self, now: float) -> None:
        try:
            self._readable()
        except Exception as exc:
            self._bug(exc)

    def expired(self, now: float) -> float | None:
        try:
            return self._expired(now)
        except Exception as exc:
            self._bug(exc)
            return None

    def writable(self, now: float) -> None:
        try:
            self._connected()
        except Exception as exc:
            self._bug(exc)

    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        try:
            self._tunnel_ended(tunnel)
        except Exception as exc:
            self._bug(exc)

    # --- the owned tunnel ------------------------------------------------------------------

    def _enter_tunnel(self, remote: AnySocket, record: ConnectionRecord, unsent: bytes) -> None:
        """The client fd (watched: no epoll_ctl, see RelayHub.add) and remote become an
        owned hub tunnel; unsent: early bytes the remote did not take, which the task path
        sends (the tunnel is promoted at once)."""
        front = self.front
        tunnel = front.hub.add(self.sock, remote, record, front.threshold, owner=self)
        self.tunnel = tunnel
        self.stage = Stage.TUNNEL
        if unsent:
            tunnel.pending_up = unsent
            front.hub.promote(tunnel)
            return
        settings = front.relay_settings
        assert settings is not None
        if self.timer is not None:
            self.timer.cancel()
        self.timer = front.hub.call_at(tunnel.last_active + settings.idle_timeout, self)

    def _expired(self, now: float) -> float | None:
        if self.stage is Stage.HANDSHAKE:
            if now < self.deadline:
                return self.deadline
            self._timed_out()
            return None
        if self.stage is Stage.DIALING:
            pending = self.pending
            if pending is None:
                return None
            if now < pending.deadline:
                return pending.deadline
            self._take_pending()
            self._dial_failed(self.front.ctx.dialer.abandon(pending))
            return None
        if self.stage is Stage.TUNNEL and self.tunnel is not None:
            settings = self.front.relay_settings
            assert settings is not None
            if self.tunnel.ending is not Ending.RUNNING:
                return None
            again = self.front.hub.expire_idle(self.tunnel, settings.idle_timeout, now)
            if again is None:
                self._end(f"idle for {settings.idle_timeout:g} s, closed")
            return again
        return None

    def _tunnel_ended(self, tunnel: HubTunnel) -> None:
        if self.stage is not Stage.TUNNEL:
            return
        if tunnel.ending is Ending.PROMOTED:
            self._leave()
            try:
                self.front.spawn(_continue, self, tunnel)
            except Exception as exc:  # no task to go on in: end it here (then _bug logs)
                self._finish(self.bug_outcome.format(exc=exc))
                raise
            return
        if tunnel.broken:
            self.front.logger.debug("tunnel %s: %s", self.client, tunnel.broken)
        self._end(tunnel.broken or "ok")

    # --- leaving ---------------------------------------------------------------------------

    def _leave(self) -> None:
        if self.stage is Stage.HANDSHAKE:
            self.front.hub.unwatch(self.fd)
        elif self.stage is Stage.DIALING:
            pending = self._take_pending()
            if pending is not None:  # ended while dialing (shutdown): never leak it
                pending.sock.close()
        elif self.stage is Stage.TUNNEL and self.tunnel is not None:
            self.front.hub.remove(self.tunnel)
        self.stage = Stage.GONE
        if self.timer is not None:  # else the pending entry keeps this object alive
            self.timer.cancel()
            self.timer = None
        self.front.left(self)

    def _to_task(self) -> trio.SocketStream:
        """Leave for the task path (the protocol's _hand_off spawns it with this stream)."""
        self._leave()
        self.front.handed_off += 1
        return trio.SocketStream(trio.socket.from_stdlib_socket(self.sock))

    def _end(self, outcome: str) -> None:
        """End here (unless ended or handed off already): see _finish."""
        if self.stage is Stage.GONE:
            return
        self._leave()
        self.front.served += 1
        self._finish(outcome)

    def _finish(self, outcome: str) -> None:
        """Sockets closed, slot back, the record (if any) finished with outcome unless it
        has one already: one line."""
        if self.dialed is not None:
            _close(self.dialed)
            self.dialed = None
        self.sock.close()
        ctx = self.front.ctx
        slot, self.slot = self.slot, None
        if slot is not None:
            ctx.connection_slots.release_on_behalf_of(slot)
        record = self.record
        if record is not None:
            if record.outcome == "open":
                record.outcome = outcome
            ctx.recorder.finish(record)

    def _bug(self, exc: Exception) -> None:
        """A bug in a hub callback ends this connection only (logged, record finished)."""
        log, name = self.front.logger, self.front.name
        log.exception("%s front end failed for %s (a bug in proxy64)", name, self.client)
        try:
            self._end(self.bug_outcome.format(exc=exc))
        except Exception:  # pragma: no cover - the last resort must not raise either
            log.exception("%s front end could not end %s", name, self.client)

    def abort(self) -> None:
        """Shutdown ran out of grace: end now."""
        self._end(SHUTDOWN_OUTCOME)


def _close(dialed: Dialed) -> None:
    stream = dialed.stream
    assert isinstance(stream, trio.SocketStream)  # connect_now dials sockets only
    stream.socket.close()


async def _continue(connection: HubConnection, tunnel: HubTunnel) -> None:
    """A promoted owned tunnel goes on in a task on relay()'s task path (bulk, a full
    destination) from its tails; the connection ends here, as on the task path."""
    front, record, dialed = connection.front, connection.record, connection.dialed
    settings = front.relay_settings
    assert settings is not None and record is not None and dialed is not None
    client = trio.SocketStream(trio.socket.from_stdlib_socket(connection.sock))
    try:
        await relay(
            client,
            dialed.stream,
            record,
            idle_timeout=settings.idle_timeout,
            splice_threshold=settings.splice_threshold,
            splice_release_after=settings.splice_release_after,
            promoted=tunnel,
            hub=front.hub,
        )
        if record.outcome == "open":
            record.outcome = "ok"
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if record.outcome == "open":
            record.outcome = connection._relay_lost(exc)
    finally:
        connection._finish(SHUTDOWN_OUTCOME)
