"""Zero-copy forwarding of one TCP direction with splice(2): socket → pipe → socket.

The one splice loop of proxy64: the relay (until EOF or silence) and the HTTP body mover
(an exact byte count, proxy64/net/http_upstream.py) both run splice_direction().
Linux only. Both ends are non-blocking sockets (trio's); readiness comes from
trio.lowlevel.wait_readable / wait_writable on their fds.

Invariants:
- Every byte moved into the pipe is moved out before this returns normally: no data is
  lost; with a `length`, not a byte past it is read (the next message stays in the kernel).
- The pipe exists only while this runs; with `quiet_after` a silent source gives it back
  (returns QUIET), so idle tunnels hold no pipe fds.
- When no pipe can be made (the process or system is out of fds, or of memory) nothing is
  read and NO_PIPE is returned: the caller copies instead. Running short of fds slows a
  tunnel down; it never breaks one.
- SPLICE_F_MORE is never passed: it corks TCP and stalls small messages.
- dst's TCP_NOTSENT_LOWAT (trio sets 16 KiB) is raised to SPLICE_NOTSENT_LOWAT while this
  runs and put back after: with 16 KiB every pipe→socket splice stopped at 16 KiB of unsent
  data whenever the receiver lagged, and the proxy paid for many more, smaller sends (upload
  proxy CPU 0.6 → 0.35 s/GiB). It only bounds queueing; it never holds bytes back.
Shape: take from src as much as the pipe has room for (SPLICE_PIPE_SIZE, or what the
kernel granted), then drain the pipe to dst without waiting; wait only when src is dry
(readable) or when the pipe holds bytes dst will not take (writable); yield to other
tasks every SPLICE_YIELD_EVERY bytes. One splice-in per pipeful, not a fixed smaller
chunk: each splice(2) call costs the same entry, socket lock and ACK bookkeeping whatever
it moves, and on a CPU shared with the endpoints the extra calls and the preemptions they
invite cost more than the bytes (docs/performance-design.md, "Bulk").
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import socket
from collections.abc import Callable

import trio

from proxy64.defaults import (
    SPLICE_NOTSENT_LOWAT,
    SPLICE_PIPE_SIZE,
    SPLICE_YIELD_EVERY,
)
from proxy64.errors import OUT_OF_RESOURCES

SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
HAVE_SPLICE = hasattr(os, "splice")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class SpliceEnd(enum.Enum):
    EOF = "eof"  # the source sent FIN; everything was forwarded
    DONE = "done"  # `length` bytes were forwarded
    QUIET = "quiet"  # the source went silent; pipe released, caller goes back to copying
    NO_PIPE = "no pipe"  # no pipe could be made (fds or memory ran out); nothing was read


class Stall(enum.Enum):
    """Why a side failed (SpliceBroken.cause)."""

    CLOSED = "closed"  # src sent FIN before `length` bytes
    BROKEN = "broken"  # a splice failed: reset, EPIPE, ...
    SILENT = "silent"  # a wait on that side outlasted `stall_after`


class SpliceBroken(trio.BrokenResourceError):
    """One side of a splice failed; at_source says which. `reason` is the errno name for
    BROKEN. A BrokenResourceError, so a relay treats it like any broken stream."""

    def __init__(self, cause: Stall, *, at_source: bool, reason: str = "") -> None:
        side = "source" if at_source else "destination"
        super().__init__(f"{side} {cause.value}{f' ({reason})' if reason else ''}")
        self.cause = cause
        self.at_source = at_source
        self.reason = reason


class Pipe:
    """A non-blocking pipe pair, closed exactly once; `size`: the bytes it holds at most
    (SPLICE_PIPE_SIZE, or the kernel's default where pipe-max-size is lower)."""

    __slots__ = ("read_fd", "size", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:  # the size granted, rounded up to whole pages
            self.size = int(fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, SPLICE_PIPE_SIZE))
        except OSError:  # pipe-max-size is lower: the default (64 KiB) stays
            self.size = int(fcntl.fcntl(self.write_fd, _F_GETPIPE_SZ))

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            os.close(self.write_fd)
            self.read_fd = self.write_fd = -1


async def splice_direction(
    src: trio.socket.SocketType,
    dst: trio.socket.SocketType,
    *,
    on_written: Callable[[int], None],
    on_read: Callable[[int], None] | None = None,
    length: int | None = None,
    quiet_after: float | None = None,
    stall_after: float | None = None,
) -> SpliceEnd:
    """Move bytes src → dst: until FIN (EOF), `length` bytes (DONE), or `quiet_after`
    seconds of silence from src with nothing held (QUIET); NO_PIPE at once, before reading
    anything, when no pipe can be made.

    on_read(n) after each read from src, on_written(n) after each write to dst.
    Raises SpliceBroken: a splice failed, src closed before `length`, or a wait on either
    side outlasted `stall_after` (None: no limit here; the caller's scope decides).
    """
    src_fd, dst_fd = src.fileno(), dst.fileno()
    try:
        pipe = Pipe()
    except OSError as exc:
        if exc.errno in OUT_OF_RESOURCES:
            return SpliceEnd.NO_PIPE
        raise
    lowat = _raise_notsent_lowat(dst)
    left = length  # bytes still to read from src; None: until FIN
    held = 0  # bytes in the pipe, not yet delivered to dst
    unyielded = 0  # bytes delivered since this direction last waited or yielded
    try:
        while True:
            # Fill then drain, each until it would block: one wait per EAGAIN, not one
            # per chunk, and src keeps flowing into the pipe while dst is slow.
            src_dry = left == 0
            room = pipe.size - held
            if not src_dry and room > 0:
                want = room if left is None else min(left, room)
                try:
                    moved = os.splice(src_fd, pipe.write_fd, want, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    # or the pipe's slots are full (small segments): the drain empties it
                    src_dry, moved = True, -1
                except OSError as exc:
                    raise SpliceBroken(Stall.BROKEN, at_source=True, reason=_text(exc)) from None
                if moved == 0:
                    if left is not None:
                        raise SpliceBroken(Stall.CLOSED, at_source=True)
                    while held:  # FIN: deliver what the pipe holds, then report EOF
                        held -= await _drain(pipe.read_fd, dst_fd, held, on_written, stall_after)
                    return SpliceEnd.EOF
                if moved > 0:
                    held += moved
                    if left is not None:
                        left -= moved
                    if on_read is not None:
                        on_read(moved)
            if held:
                full = held >= pipe.size  # nothing more fits: wait for dst to take some
                sent = await _drain(
                    pipe.read_fd, dst_fd, held, on_written, stall_after, waits=src_dry or full
                )
                held -= sent
                unyielded += sent
            elif left == 0:
                return SpliceEnd.DONE
            elif src_dry:
                unyielded = 0
                limit = quiet_after if quiet_after is not None else stall_after
                if limit is None:
                    await trio.lowlevel.wait_readable(src_fd)
                    continue
                with trio.move_on_after(limit) as waiting:
                    await trio.lowlevel.wait_readable(src_fd)
                if not waiting.cancelled_caught:
                    continue
                if quiet_after is not None:
                    return SpliceEnd.QUIET
                raise SpliceBroken(Stall.SILENT, at_source=True)
            if unyielded >= SPLICE_YIELD_EVERY:
                unyielded = 0
                await trio.lowlevel.checkpoint()  # stay fair to other tunnels under bulk
    finally:
        pipe.close()
        if lowat is not None:
            with contextlib.suppress(OSError):  # dst may already be reset
                dst.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, lowat)


async def _drain(
    read_fd: int,
    dst_fd: int,
    held: int,
    on_written: Callable[[int], None],
    stall_after: float | None,
    *,
    waits: bool = True,
) -> int:
    """Move up to `held` bytes pipe → dst; return how many moved (0 when dst is full and
    not `waits`). With `waits`, a full dst is waited for until at least one byte moves."""
    while True:
        try:
            sent = os.splice(read_fd, dst_fd, held, flags=SPLICE_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise SpliceBroken(Stall.BROKEN, at_source=False, reason=_text(exc)) from None
        if sent:
            on_written(sent)
            return sent
        if not waits:
            return 0
        if stall_after is None:
            await trio.lowlevel.wait_writable(dst_fd)
            continue
        with trio.move_on_after(stall_after) as waiting:
            await trio.lowlevel.wait_writable(dst_fd)
        if waiting.cancelled_caught:
            raise SpliceBroken(Stall.SILENT, at_source=False)


def _raise_notsent_lowat(dst: trio.socket.SocketType) -> int | None:
    """Set dst's TCP_NOTSENT_LOWAT to SPLICE_NOTSENT_LOWAT; the old value, or None when
    the option is not there (not TCP, not Linux)."""
    try:
        old = dst.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
        if 0 < old < SPLICE_NOTSENT_LOWAT:  # 0: no limit (the sysctl's default)
            dst.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, SPLICE_NOTSENT_LOWAT)
            return int(old)
    except OSError:
        pass
    return None


def _text(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "") or exc.strerror or str(exc)
