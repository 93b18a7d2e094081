"""Outcome texts for a connection's log line: words a person reads, never a class repr.

The front ends end connections for many reasons carried as exceptions (some private to
one module); these functions turn them into sentences, so a log line never says
"_ClientGone()" or "Cancelled()".
"""

from __future__ import annotations

import h11
import trio

from proxy64.net.resets import broken_outcome, is_reset


def client_ended(exc: BaseException) -> str:
    """Why the client's side ended an HTTP exchange before it was complete."""
    if isinstance(exc, trio.TooSlowError):
        return "client sent nothing within the idle timeout"
    if isinstance(exc, h11.RemoteProtocolError):
        return f"client broke HTTP/1.1: {exc}"
    if is_reset(exc):
        return "client reset the connection"
    return "client closed the connection before the exchange was complete"


def client_lost(exc: BaseException) -> str:
    """The client's connection failed under us: "client reset the connection", or what
    broke it ("client connection broke: Connection timed out")."""
    return broken_outcome(True, exc)


def aborted(exc: BaseException) -> str:
    """Why a connection ended from outside its own logic (shutdown, or a bug)."""
    if isinstance(exc, trio.Cancelled):
        return "closed at shutdown"
    if isinstance(exc, KeyboardInterrupt):
        return "closed by an interrupt"
    text = str(exc)
    return f"internal error: {type(exc).__name__}{': ' + text if text else ''}"
