"""A reset on one side of a tunnel reaches the other side as a reset, never as a FIN.

A relay that answers an origin's RST with a FIN to the client makes a truncated download
look complete. So when one side breaks (RST, or any error that is not a clean FIN), the
other side's socket gets SO_LINGER {on, 0}: its close() then sends RST (RFC 9293 §3.10.4
ABORT; Linux discards unsent data and resets). TUN flow streams, which are not sockets,
offer the same as a `reset_on_close()` method.

The outcome text says who broke the tunnel, in words: "origin reset the connection",
"client reset the connection", else "client connection broke: …".
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from typing import Protocol, runtime_checkable

import trio

# struct linger {int l_onoff; int l_linger;}: on, 0 s → close() sends RST (socket(7)).
LINGER_ABORT = struct.pack("ii", 1, 0)

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})
_RESET_NAMES = frozenset({"ECONNRESET", "EPIPE"})


@runtime_checkable
class Resettable(Protocol):
    """A stream that is not a socket but can end in a reset (a TUN flow)."""

    def reset_on_close(self) -> None: ...


def reset_socket_on_close(sock: socket.socket | trio.socket.SocketType) -> None:
    """The next close() of sock sends RST instead of FIN; nothing when already closed."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)


def reset_on_close(stream: object) -> None:
    """The next close of stream (a trio.SocketStream, a socket or a Resettable) resets it."""
    if isinstance(stream, trio.SocketStream):
        reset_socket_on_close(stream.socket)
    elif isinstance(stream, (socket.socket, trio.socket.SocketType)):
        reset_socket_on_close(stream)
    elif isinstance(stream, Resettable):
        stream.reset_on_close()


def is_reset(exc: BaseException) -> bool:
    """Whether exc (or the error it wraps) says the peer reset the connection."""
    seen: BaseException | None = exc
    for _ in range(4):  # a BrokenResourceError wraps the OSError as its cause
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _RESET_ERRNOS:
            return True
        reason = getattr(seen, "reason", None)  # SpliceBroken: the errno's name
        if isinstance(reason, str) and reason in _RESET_NAMES:
            return True
        seen = seen.__cause__
    return False


def broken_outcome(at_client: bool, exc: BaseException) -> str:
    """The log outcome when one side of a tunnel broke: who, and how, in words."""
    who = "client" if at_client else "origin"
    if is_reset(exc):
        return f"{who} reset the connection"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return f"{who} connection broke: {text}"
