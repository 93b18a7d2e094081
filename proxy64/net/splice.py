"""Zero-copy forwarding of one TCP direction with splice(2): socket → pipe → socket.

Linux only. Both ends are non-blocking sockets (trio's); readiness comes from
trio.lowlevel.wait_readable / wait_writable on their fds. The pipe is created by the caller
only for a direction that has carried bulk data, and this loop gives it back (returns
QUIET) when the source has been silent for `release_after` seconds, so idle tunnels hold
no pipe fds. SPLICE_F_MORE is never passed: it corks TCP and stalls small messages.
Every byte moved into the pipe is moved out before this returns: no data is lost.
The loop takes RELAY_SPLICE_CHUNK (256 KiB) from src into a 1 MiB pipe and drains it
to dst without waiting; it waits only when src is dry (readable) or both the pipe and
dst are full (writable), and yields to other tasks every SPLICE_YIELD_EVERY bytes.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
from collections.abc import Callable

import trio

from proxy64.defaults import RELAY_SPLICE_CHUNK, SPLICE_PIPE_SIZE, SPLICE_YIELD_EVERY

SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
HAVE_SPLICE = hasattr(os, "splice")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_BROKEN = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH)


class SpliceEnd(enum.Enum):
    EOF = "eof"  # the source sent FIN; everything was forwarded
    QUIET = "quiet"  # the source went silent; pipe released, caller goes back to copying


class Pipe:
    """A non-blocking pipe pair, closed exactly once."""

    __slots__ = ("read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # keep 64 KiB when pipe-max-size is lower
            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, SPLICE_PIPE_SIZE)

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            os.close(self.write_fd)
            self.read_fd = self.write_fd = -1


async def splice_direction(
    src_fd: int, dst_fd: int, count: Callable[[int], None], release_after: float
) -> SpliceEnd:
    """Move bytes src → dst until EOF or silence; count(n) after each delivered chunk.

    Raises trio.BrokenResourceError when either socket breaks (reset, EPIPE).
    """
    pipe = Pipe()
    held = 0  # bytes in the pipe, not yet delivered to dst
    unyielded = 0  # bytes delivered since this direction last waited or yielded
    try:
        while True:
            # Fill then drain, each until it would block: one wait per EAGAIN, not one
            # per chunk, and src keeps flowing into the pipe while dst is slow.
            src_dry = False
            try:
                moved = os.splice(src_fd, pipe.write_fd, RELAY_SPLICE_CHUNK, flags=SPLICE_FLAGS)
            except BlockingIOError:
                src_dry = True  # or the pipe is full: the drain below empties it
                moved = -1
            except OSError as exc:
                raise _broken(exc) from exc
            if moved == 0:  # FIN: deliver what the pipe holds, then report EOF
                while held:
                    held -= await _drain(pipe.read_fd, dst_fd, held, count, wait=True)
                return SpliceEnd.EOF
            if moved > 0:
                held += moved
            if held:
                sent = await _drain(pipe.read_fd, dst_fd, held, count, wait=src_dry)
                held -= sent
                unyielded += sent
            elif src_dry:
                unyielded = 0
                with trio.move_on_after(release_after) as waiting:
                    await trio.lowlevel.wait_readable(src_fd)
                if waiting.cancelled_caught:
                    return SpliceEnd.QUIET
                continue
            if unyielded >= SPLICE_YIELD_EVERY:
                unyielded = 0
                await trio.lowlevel.checkpoint()  # stay fair to other tunnels under bulk
    finally:
        pipe.close()


async def _drain(
    read_fd: int, dst_fd: int, held: int, count: Callable[[int], None], *, wait: bool
) -> int:
    """Move up to `held` bytes pipe → dst; return how many moved (0 when dst is full and
    wait is False). With wait, a full dst is waited for until at least one byte moves."""
    while True:
        try:
            sent = os.splice(read_fd, dst_fd, held, flags=SPLICE_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _broken(exc) from exc
        if sent:
            count(sent)
            return sent
        if not wait:
            return 0
        await trio.lowlevel.wait_writable(dst_fd)


def _broken(exc: OSError) -> BaseException:
    if exc.errno in _BROKEN:
        return trio.BrokenResourceError(str(exc))
    return exc
