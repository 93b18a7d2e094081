"""What HTTP adds to the session vocabulary (proto/session.py): the forwarding exchange.

Forwarding one request to an origin and its response back is I/O from end to end (the
client's body read and written on, the origin's h11 client machine, bodies of known length
moved outside h11 with splice(2)); the executor runs it as one awaiting helper
(net/http_exchange.py) when the session machine gives `Forward`, and feeds back one of
`Exchanged`, `OriginFailed` or `session.ClientLost`. What follows (another request on the
same connection, a retry on a new one, an error answer or a reset) is the machine's
decision (proto/http_session.py).

Invariant: an exchange is run on the upstream the executor holds (the last `Dial` that
was `Connected`), with the client's h11 machine the command lends it; the machine does not
touch that h11 machine while the exchange runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

from proxy64.defaults import HTTP_MAX_HEAD
from proxy64.proto.httpproxy import ForwardTarget
from proxy64.proto.session import Await, Awaited


@dataclass(frozen=True, slots=True)
class Forward(Await):
    """Forward target.request (and the client's body, read through `conn`) on the held
    upstream with its h11 client machine `upstream` (`sent`: requests it carried before
    this one), and the origin's response back to the client through `conn`; feed
    `Exchanged`, `OriginFailed` or `ClientLost`. Not terminal."""

    target: ForwardTarget
    conn: h11.Connection  # the client's h11 machine (h11.SERVER), lent for the exchange
    upstream: h11.Connection  # the origin's side (h11.CLIENT), lent for the exchange
    sent: int = 0


@dataclass(frozen=True, slots=True)
class Exchanged(Awaited):
    """The response went to the client whole.

    upstream: the origin's h11 machine ready for the next request on the same connection
    (RFC 9112 §9.3), or None: the connection cannot be reused (the executor still holds
    it and the machine ends it). after_request: the request body went outside h11, and
    these are the bytes the client sent after it (and whether it had closed);
    response_outside: the response body went outside h11."""

    upstream: h11.Connection | None
    after_request: tuple[bytes, bool] | None = None
    response_outside: bool = False


@dataclass(frozen=True, slots=True)
class OriginFailed(Awaited):
    """The origin's side broke: `message` is the sentence (the record's outcome and the
    answer's text), `status` what to answer (502, 504 for a silent origin). stale: a
    reused connection the origin had closed while idle (RFC 9110 §9.2.2: worth one retry
    of an idempotent request); responded: a response head had come from the origin."""

    message: str
    status: int = 502
    stale: bool = False
    responded: bool = False


def upstream_machine() -> h11.Connection:
    """The origin's side of a new upstream connection (a head beyond HTTP_MAX_HEAD is
    an origin's error)."""
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=HTTP_MAX_HEAD)
