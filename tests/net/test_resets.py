"""The reset rule's words and checks (proxy64/net/resets.py, outcomes.py): who reset,
from errnos, wrapped errors and splice failures; SO_LINGER {1, 0} on the other socket."""

from __future__ import annotations

import errno
import socket
import struct

import h11
import pytest
import trio

from proxy64.net.outcomes import aborted, client_ended, client_lost
from proxy64.net.resets import LINGER_ABORT, broken_outcome, is_reset, reset_on_close
from proxy64.net.splice import SpliceBroken, Stall


def wrapped(exc: OSError) -> trio.BrokenResourceError:
    error = trio.BrokenResourceError(f"socket connection broken: {exc}")
    error.__cause__ = exc
    return error


@pytest.mark.parametrize(
    ("exc", "reset"),
    [
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), True),
        (wrapped(ConnectionResetError(errno.ECONNRESET, "reset")), True),
        (SpliceBroken(Stall.BROKEN, at_source=True, reason="ECONNRESET"), True),
        (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), False),
        (SpliceBroken(Stall.SILENT, at_source=False), False),
        (trio.ClosedResourceError("closed"), False),
    ],
)
def test_is_reset(exc: BaseException, reset: bool) -> None:
    assert is_reset(exc) is reset


def test_outcome_words_say_who() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    timeout = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
    assert broken_outcome(False, reset) == "origin reset the connection"
    assert broken_outcome(True, reset) == "client reset the connection"
    assert broken_outcome(False, timeout) == "origin connection broke: Connection timed out"
    assert client_lost(wrapped(reset)) == "client reset the connection"


def test_http_client_outcomes_are_sentences_not_class_names() -> None:
    assert client_ended(trio.TooSlowError()) == "client sent nothing within the idle timeout"
    assert client_ended(h11.RemoteProtocolError("bad")) == "client broke HTTP/1.1: bad"
    assert "()" not in client_ended(Exception())
    assert aborted(trio.Cancelled._create()) == "closed at shutdown"
    assert aborted(ValueError("x")) == "internal error: ValueError: x"


def test_reset_on_close_sets_linger_zero() -> None:
    a, b = socket.socketpair()
    with a, b:
        reset_on_close(a)
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == LINGER_ABORT
        assert struct.unpack("ii", LINGER_ABORT) == (1, 0)
    reset_on_close(a)  # closed: nothing happens
