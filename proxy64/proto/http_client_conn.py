"""The client side of an HTTP proxy connection as h11 sees it (pure): its machine, the
words for a head h11 refuses, the encoding of whole answers, whether the connection
persists, and the machine for the next request after a body went outside h11.

h11 frames; these helpers only encode what the session machine (proto/http_session.py)
decided. RFC 9112 §9.3 (persistence), §2.3 (the head's size bound: 431).
"""

from __future__ import annotations

import re

import h11

from proxy64.defaults import HTTP_MAX_HEAD
from proxy64.proto.http_headers import keeps_alive
from proxy64.proto.httpproxy import error_response


def new_machine() -> h11.Connection:
    """The client side's h11 machine (a head beyond HTTP_MAX_HEAD: 431)."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=HTTP_MAX_HEAD)


def encode_whole(conn: h11.Connection, response: h11.Response, body: bytes) -> bytes:
    """A whole response (head, body, end) encoded by conn, as one write."""
    events = (response, h11.Data(data=body), h11.EndOfMessage())
    return b"".join(conn.send(event) or b"" for event in events)


def encode_error(conn: h11.Connection, status: int, message: str) -> bytes | None:
    """The whole error answer, or None once a response has started (nothing may be said
    then: the connection is closed instead)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return None
    response, body = error_response(status, message)
    return encode_whole(conn, response, body)


def persists(
    conn: h11.Connection,
    request: h11.Request,
    after_request: tuple[bytes, bool] | None,
    response_outside: bool,
) -> bool:
    """Whether the connection carries another request after this one (RFC 9112 §9.3).
    When h11 carried the whole cycle, its machine says; when a body went outside h11
    (after_request: the request's, with what followed it; response_outside: the
    response's), the machine is left in SEND_BODY and the verdict is h11's own rule."""
    if after_request is None and not response_outside:
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE
    done = response_outside or conn.our_state is h11.DONE
    return done and keeps_alive(request.headers.raw_items(), request.http_version)


def fresh_machine(data: bytes, closed: bool) -> h11.Connection:
    """The machine for the next request after a body went outside h11, fed what the
    client sent after it (and its EOF)."""
    fresh = new_machine()
    if data:
        fresh.receive_data(data)
    if closed:
        fresh.receive_data(b"")
    return fresh


def head_problem(exc: h11.RemoteProtocolError) -> str:
    """A head h11 refused, in words (its status hint: 400, 431 or 501)."""
    if exc.error_status_hint == 431:
        return f"the request head is larger than {HTTP_MAX_HEAD} bytes"
    if exc.error_status_hint == 501:
        return f"{exc}: send the body with Content-Length or chunked"
    return f"the request head is not valid HTTP/1.1 ({printable(str(exc))})"


_BYTES_REPR = re.compile(r"""(?:bytearray\()?b(['"])(.*?)\1\)?""")


def printable(text: str | bytes) -> str:
    """h11 quotes raw input as Python reprs (bytearray(b'...')); a person reads "...".
    Control characters are escaped so a log line stays one line."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "backslashreplace")
    text = _BYTES_REPR.sub(lambda m: f'"{m.group(2)}"', text)
    return text.encode("unicode_escape").decode("ascii")[:200]
