"""A listening socket whose accepts fail first: for the accept loop's back-off and retry."""

from __future__ import annotations

import os
import socket
from typing import Any

import trio


class FlakyListener:
    """sock, whose accept4(2) (socket's _accept(), which the hub's acceptor calls) fails
    once with each errno of `errors` in turn, then accepts. `calls` holds trio's clock at
    each call; everything else is the socket's."""

    def __init__(self, sock: socket.socket, *errors: int) -> None:
        self.sock = sock
        self.errors = errors
        self.calls: list[float] = []

    def _accept(self) -> tuple[int, Any]:
        self.calls.append(trio.current_time())
        if len(self.calls) <= len(self.errors):
            error = self.errors[len(self.calls) - 1]
            raise OSError(error, os.strerror(error))
        accepted: tuple[int, Any] = self.sock._accept()  # type: ignore[attr-defined]
        return accepted

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def as_socket(self) -> socket.socket:
        """This stand-in where the accept loop takes a socket.socket: what the loop calls
        (fileno(), _accept()) is answered here or by the socket."""
        return self  # type: ignore[return-value]
