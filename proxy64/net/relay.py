"""The relay: copy a tunnel's bytes both ways until both directions are done.

Invariants:
- TCP half-close is kept: EOF from one side becomes send_eof() (shutdown SHUT_WR) on the
  other, and the other direction keeps flowing until its own EOF.
- Byte counts go into record.bytes_up (client → remote) / bytes_down as they are delivered.
- Idle timeout: when no byte moved either way for idle_timeout, the tunnel is closed (on
  the task path within min(RELAY_IDLE_SLACK, idle_timeout / 16) after that).
- Between two trio.SocketStreams (splice_threshold not 0) the tunnel starts in the relay
  hub (proxy64/net/relay_hub.py) the Relay was given: one task moves every such tunnel's small
  traffic and this task only parks. The hub hands the tunnel back ("promoted") at the
  splice threshold or when a write would block, with the unwritten tail and which
  directions already ended; the task-based path below continues from exactly there.
- The task-based path: between two trio.SocketStreams, read/write on the raw
  fds, waiting only when they would block (write_fd_all); for any other stream (TUN flows)
  receive_some/send_all. Between two sockets on Linux, once a direction has carried
  splice_threshold bytes it moves to splice(2) (proxy64/net/splice.py); it comes back to
  copying, releasing its pipe, when quiet. Every switch happens between two fully written
  chunks and nothing is buffered here or in SocketStream, so no byte is lost or reordered.
- A reset (or any break) on either side ends the whole tunnel, and the other side is
  closed with RST, not FIN (proxy64/net/resets.py), so a truncation is never silent; both
  streams are closed when relay returns.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any

import trio

from proxy64.defaults import (
    IDLE_TIMEOUT,
    RELAY_CHUNK,
    RELAY_IDLE_SLACK,
    SPLICE_RELEASE_AFTER,
    SPLICE_THRESHOLD,
)
from proxy64.net.context import ConnectionRecord
from proxy64.net.relay_hub import Ending, HubTunnel, RelayHub, wait_for
from proxy64.net.resets import broken_outcome, reset_on_close
from proxy64.net.splice import HAVE_SPLICE, SpliceBroken, SpliceEnd, splice_direction
from proxy64.net.steps import write_all

logger = logging.getLogger(__name__)

# A copying direction that never has to wait yields to the scheduler after this many bytes,
# so a busy tunnel cannot starve the others; small exchanges never pay for a checkpoint.
FAIR_SHARE = 4 * RELAY_CHUNK


class Relay:
    """A configured relay (RelayLike): app.py builds one and puts it in the ProxyContext."""

    __slots__ = ("hub", "idle_timeout", "splice_release_after", "splice_threshold")

    def __init__(
        self,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        splice_threshold: int | None = SPLICE_THRESHOLD,
        splice_release_after: float = SPLICE_RELEASE_AFTER,
        hub: RelayHub | None = None,
    ) -> None:
        self.hub = hub  # None: every tunnel relayed by its own task
        self.idle_timeout = idle_timeout
        self.splice_threshold = splice_threshold
        self.splice_release_after = splice_release_after

    def __call__(
        self,
        client: trio.abc.HalfCloseableStream,
        remote: trio.abc.HalfCloseableStream,
        record: ConnectionRecord,
    ) -> Coroutine[Any, Any, None]:
        # a plain def returning relay()'s coroutine: one frame fewer per idle tunnel
        return relay(
            client,
            remote,
            record,
            idle_timeout=self.idle_timeout,
            splice_threshold=self.splice_threshold,
            splice_release_after=self.splice_release_after,
            hub=self.hub,
        )


async def relay(
    client: trio.abc.HalfCloseableStream,
    remote: trio.abc.HalfCloseableStream,
    record: ConnectionRecord,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
    splice_threshold: int | None = SPLICE_THRESHOLD,
    splice_release_after: float = SPLICE_RELEASE_AFTER,
    promoted: HubTunnel | None = None,
    hub: RelayHub | None = None,
) -> None:
    """Relay until both directions reach EOF, a side breaks, or the tunnel idles out.

    splice_threshold None disables splice(2); 0 splices from the first byte.
    hub: the running relay hub that carries small traffic between two sockets (None:
    this task relays everything).
    promoted: a tunnel the hub drove with no task waiting (the hub-driven front end) and
    has just promoted: continue on the task path from its tails and EOFs.
    """
    sockets = isinstance(client, trio.SocketStream) and isinstance(remote, trio.SocketStream)
    if not (HAVE_SPLICE and splice_threshold is not None and sockets):
        splice_threshold = None
    use_hub = hub is not None and sockets and splice_threshold != 0
    pending_up = pending_down = b""
    eof_up = eof_down = False
    if promoted is not None:  # hand-off point from an owned hub tunnel (net/executor.py)
        pending_up, pending_down = promoted.pending_up, promoted.pending_down
        eof_up, eof_down = promoted.eof_up, promoted.eof_down
    try:
        while True:
            if use_hub and promoted is None:
                assert isinstance(client, trio.SocketStream)
                assert isinstance(remote, trio.SocketStream)
                assert hub is not None
                # Small traffic: the hub moves it, this task parks (proxy64/net/relay_hub.py)
                hubbed = hub.add(
                    client.socket,
                    remote.socket,
                    record,
                    splice_threshold,
                    eof_up=eof_up,
                    eof_down=eof_down,
                )
                try:
                    alive = await wait_for(hubbed, idle_timeout)
                finally:
                    hub.remove(hubbed)
                if hubbed.ending is not Ending.PROMOTED:
                    if not alive:
                        outcome = f"idle for {idle_timeout:g} s, closed"
                    else:
                        outcome = hubbed.broken or "ok"
                        if hubbed.broken:
                            logger.debug("tunnel %s: %s", record.client, hubbed.broken)
                    if record.outcome == "open":
                        record.outcome = outcome
                    return
                # bulk or a full destination: the task-based path continues from here
                pending_up, pending_down = hubbed.pending_up, hubbed.pending_down
                eof_up, eof_down = hubbed.eof_up, hubbed.eof_down
            tunnel = _Tunnel(record, idle_timeout, splice_threshold, splice_release_after)
            tunnel.half_closed = eof_up or eof_down
            tunnel.ended = [eof_down, eof_up]  # indexed by `up`
            tunnel.can_rehub = use_hub
            async with trio.open_nursery() as nursery:
                tunnel.scope = nursery.cancel_scope
                nursery.cancel_scope.deadline = trio.current_time() + idle_timeout
                if not eof_down:
                    nursery.start_soon(tunnel.direction, remote, client, False, pending_down)
                if not eof_up:  # one task fewer per tunnel
                    await tunnel.direction(client, remote, True, pending_up)
            if tunnel.rehub and tunnel.broken is None:
                # quiet again: back to the hub, without this task path's frames and tasks
                eof_down, eof_up = tunnel.ended
                pending_up = pending_down = b""
                promoted = None
                continue
            if tunnel.scope.cancelled_caught and tunnel.broken is None:
                tunnel.outcome = f"idle for {idle_timeout:g} s, closed"
            if record.outcome == "open":
                record.outcome = tunnel.outcome
            return
    finally:
        await close_stream(remote)
        await close_stream(client)


async def close_stream(stream: trio.abc.AsyncResource) -> None:
    """Close at once; a socket needs no checkpoint (the lean per-connection path).

    Idempotent: socket.close() and aclose_forcefully on a closed stream do nothing."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    else:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


async def write_fd_all(fd: int, data: bytes) -> None:
    """Write all of data to a non-blocking socket fd, waiting (trio) only when it would
    block.

    Between two sockets the relay reads and writes the raw fds, skipping SocketStream's
    per-call checkpoints; fairness comes from the caller (see _Tunnel.direction: it yields
    after FAIR_SHARE bytes moved without a wait). Raises OSError when broken.
    """
    await write_all(fd, data, trio.lowlevel.wait_writable)


class _Tunnel:
    __slots__ = (
        "broken",
        "can_rehub",
        "ended",
        "half_closed",
        "idle",
        "outcome",
        "quiet_directions",
        "record",
        "rehub",
        "release_after",
        "scope",
        "slack",
        "threshold",
    )

    def __init__(
        self,
        record: ConnectionRecord,
        idle: float,
        threshold: int | None,
        release_after: float,
    ) -> None:
        self.record = record
        self.idle = idle
        self.slack = min(RELAY_IDLE_SLACK, idle / 16)
        self.threshold = threshold
        self.release_after = release_after
        self.scope: trio.CancelScope = trio.CancelScope()
        self.broken: str | None = None
        self.outcome = "ok"
        self.half_closed = False  # one direction has reached EOF and passed it on
        self.ended = [False, False]  # [down, up]: that direction reached EOF
        self.can_rehub = False  # a quiet tunnel may go back to the relay hub
        self.quiet_directions = 0  # live directions silent for release_after, waiting
        self.rehub = False  # the nursery was cancelled to go back to the hub

    async def _wait_quietly(self, fd: int) -> None:
        """Wait for data; once silent for release_after, count this direction as quiet, and
        when every live direction is, end the task path (rehub): both only wait for
        readability, so cancelling them loses no byte."""
        with trio.move_on_after(self.release_after) as waiting:
            await trio.lowlevel.wait_readable(fd)
        if not waiting.cancelled_caught:
            return
        self.quiet_directions += 1
        try:
            if self.quiet_directions == self.ended.count(False):
                self.rehub = True
                self.scope.cancel()
            await trio.lowlevel.wait_readable(fd)
        finally:
            self.quiet_directions -= 1

    def _count(self, up: bool, amount: int) -> None:
        if up:
            self.record.bytes_up += amount
        else:
            self.record.bytes_down += amount
        # Any byte resets the idle clock, but the scope's deadline is pushed at most once
        # per `slack` seconds (setting it reorders trio's deadline heap; a chunk costs
        # a float compare): the tunnel closes idle to idle + slack after its last byte.
        now = trio.current_time()
        if now + self.idle > self.scope.deadline:
            self.scope.deadline = now + self.idle + self.slack

    async def direction(
        self,
        src: trio.abc.HalfCloseableStream,
        dst: trio.abc.HalfCloseableStream,
        up: bool,
        pending: bytes = b"",
    ) -> None:
        """One direction until EOF (then send_eof), or until a side breaks (then all ends).

        pending: bytes already read from src (by the hub) that dst has not taken yet.
        One coroutine, no helper frames: an idle tunnel's memory is mostly its stacks.
        """
        threshold = self.threshold
        # what the hub carried counts toward the splice threshold (it promotes at it)
        carried = self.record.bytes_up if up else self.record.bytes_down
        quiet = False  # after a quiet splice, wait for data with no pipe held
        unyielded = 0  # bytes copied since this direction last waited or yielded
        fds: tuple[int, int] | None = None
        reading = False  # which side an OSError comes from: src while reading, else dst
        if isinstance(src, trio.SocketStream) and isinstance(dst, trio.SocketStream):
            fds = (src.socket.fileno(), dst.socket.fileno())
        try:
            if pending:
                await dst.send_all(pending)
                self._count(up, len(pending))
            while True:
                if threshold is not None and carried >= threshold and not quiet:
                    assert isinstance(src, trio.SocketStream)
                    assert isinstance(dst, trio.SocketStream)
                    end = await splice_direction(
                        src.socket,
                        dst.socket,
                        on_written=lambda n: self._count(up, n),
                        quiet_after=self.release_after,
                    )
                    if end is SpliceEnd.EOF:
                        break
                    # quiet: back to copying, pipe released; no pipe: copying, and another
                    # threshold's worth of bytes before the next try
                    carried = 0
                    quiet = True
                    continue
                if fds is not None:
                    reading = True
                    try:
                        chunk: bytes | None = os.read(fds[0], RELAY_CHUNK)
                    except BlockingIOError:
                        chunk = None
                    if chunk is None:
                        # idle tunnels wait here, outside the except block: the caught
                        # exception and its traceback are not kept alive while waiting
                        unyielded = 0
                        if self.can_rehub:
                            await self._wait_quietly(fds[0])
                        else:
                            await trio.lowlevel.wait_readable(fds[0])
                        continue
                    if not chunk:
                        break
                    reading = False
                    await write_fd_all(fds[1], chunk)
                    moved = len(chunk)
                    unyielded += moved
                    if unyielded >= FAIR_SHARE:
                        unyielded = 0
                        await trio.lowlevel.checkpoint()
                else:
                    reading = True
                    data = await src.receive_some()  # as much as the stream offers
                    if not data:
                        break
                    reading = False
                    await dst.send_all(data)
                    moved = len(data)
                quiet = False
                carried += moved
                self._count(up, moved)
            self.ended[up] = True
            if self.quiet_directions and self.quiet_directions == self.ended.count(False):
                self.rehub = True  # the other direction is quiet: back to the hub
                self.scope.cancel()
            if self.half_closed and isinstance(dst, trio.SocketStream):
                return  # both directions done: close() right after sends this FIN
            self.half_closed = True
            reading = False
            # half-close (RFC 9293 §3.6): the other direction keeps flowing
            if isinstance(dst, trio.SocketStream):
                dst.socket.shutdown(socket.SHUT_WR)  # never blocks: no checkpoint
            else:
                await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            at_src = exc.at_source if isinstance(exc, SpliceBroken) else reading
            # src is the client going up; the side that broke is src or dst
            self.broken = broken_outcome(at_src == up, exc)
            if not isinstance(exc, trio.ClosedResourceError):
                reset_on_close(dst if at_src else src)  # the other side sees RST, not FIN
            self.outcome = self.broken
            logger.debug("tunnel %s: %s", self.record.client, self.broken)
            self.scope.cancel()
