"""The outbound socket of a TUN flow as a stream that yields to the scheduler by share.

trio.SocketStream yields to the scheduler on every receive_some/send_all: one trip
through the run loop (and an epoll_wait) per 64 KiB relay chunk, about a fifth of the
TUN stack's CPU at MTU 65520. Here, like the relay's own socket↔socket path, the raw
socket is read and written while it does not block; the task yields only after
FAIR_SHARE bytes moved without a wait (so a busy flow cannot starve the packet loop and
the other flows), and waits through trio when the socket would block.

Invariants: a cancellation is noticed before any byte is taken or given (the checkpoint
comes first, never after a read or write succeeded, so no byte is lost); receive_some
returns at most max_bytes and b"" at EOF; send_all writes everything or raises
BrokenResourceError; send_eof is shutdown(SHUT_WR) (RFC 9293 §3.6 half-close); aclose
closes the socket and never blocks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable

import trio

from proxy64.defaults import RELAY_CHUNK, TUN_FAIR_SHARE, TUN_SOCKET_NOTSENT_LOWAT
from proxy64.net.resets import reset_socket_on_close


class TunSocketStream(trio.abc.HalfCloseableStream):
    """Wraps a connected trio.SocketStream (taken over: closing this closes it)."""

    __slots__ = ("_fd", "_read_size", "_receiving", "_sending", "_sock", "_stream", "_unyielded")

    def __init__(
        self, stream: trio.SocketStream, read_size: int | Callable[[], int] = RELAY_CHUNK
    ) -> None:
        """read_size: the most one receive_some returns, or a function asked before each
        read (the flow's fill_size: each chunk then completes the segments queued before
        it, so no segment spans two chunks and none is joined by a copy)."""
        self._stream = stream
        self._read_size = read_size if callable(read_size) else (lambda: max(1, read_size))
        self._sock = stream.socket
        # trio sets socket.TCP_NOTSENT_LOWAT to 16 KiB, which splits a 1 MiB relay turn into
        # several writes and waits; with room for two turns unsent it is one write (the
        # kernel's send buffer limit still bounds what is queued)
        with contextlib.suppress(OSError):
            stream.socket.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, TUN_SOCKET_NOTSENT_LOWAT
            )
        self._fd = stream.socket.fileno()
        self._unyielded = 0  # bytes moved both ways since this stream last yielded
        self._sending = False
        self._receiving = False

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._sock

    async def _enter(self) -> None:
        """Checkpoint when the share is used up, else only notice a cancellation."""
        if self._unyielded >= TUN_FAIR_SHARE:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this socket")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self._receiving = True
        try:
            await self._enter()
            while True:
                if self._sock.fileno() == -1:
                    raise trio.ClosedResourceError("the socket was closed")
                try:
                    size = self._read_size() if max_bytes is None else min(
                        max_bytes, self._read_size())  # fmt: skip
                    data = os.read(self._fd, max(1, size))
                except BlockingIOError:
                    self._unyielded = 0
                    await trio.lowlevel.wait_readable(self._fd)
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
                self._unyielded += len(data)
                return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this socket")
        self._sending = True
        try:
            await self._enter()
            view = memoryview(data)
            total = view.nbytes
            while view:
                if self._sock.fileno() == -1:
                    raise trio.ClosedResourceError("the socket was closed")
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:
                    self._unyielded = 0
                    await trio.lowlevel.wait_writable(self._fd)
                except OSError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
            self._unyielded += total
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._sock.fileno() == -1:
            raise trio.ClosedResourceError("the socket was closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:  # the peer already reset: nothing to half-close
                raise trio.BrokenResourceError(str(exc)) from exc
        await trio.lowlevel.cancel_shielded_checkpoint()

    def reset_on_close(self) -> None:
        """Close with RST, not FIN: the app reset its flow or it broke."""
        reset_socket_on_close(self._sock)

    async def aclose(self) -> None:
        self._sock.close()
        await trio.lowlevel.checkpoint()
