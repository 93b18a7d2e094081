"""One forwarded HTTP request and its response: the I/O of a `Forward` command
(proto/http_forward.py), run by the connection's executor as an awaiting helper.

The session machine (proto/http_session.py) has decided everything around it (which
upstream, 100-continue, what follows); this module moves bytes: the request head encoded
by the upstream's h11 client machine, the client's body through the client's h11 machine
(lent by the command), the origin's response back, and its result as one event
(`Exchanged`, `OriginFailed` or `ClientLost`).

Invariants: no body is ever buffered whole (Data events are forwarded as they arrive);
bodies of known length (Content-Length, or none for a request: RFC 9112 §6.3) of
HTTP_RAW_BODY_MIN or more still to come bypass h11: http_upstream.move_body() moves exactly
the body's bytes (splice(2) between sockets), never reading past it; a body already here
whole is written with its head in one call. The client's socket is read and written on
its raw fd, waiting only when a call would block. Every wait is one of net/steps.py's: the
executor steps the exchange from the relay hub while it waits for the origin, and a task
carries it on from any other wait.
RFC 9110 §6.5.1 (trailers dropped when de-chunking), RFC 9112 §9.3 (what tells whether
either side persists).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import h11
import trio

from proxy64.defaults import HTTP_BODY_CHUNK, HTTP_RAW_BODY_MIN
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed
from proxy64.net.http_upstream import BodyCut, Next, Upstream, UpstreamFailed, move_body
from proxy64.net.outcomes import client_ended
from proxy64.net.steps import Readable, in_task, wait, write_all
from proxy64.proto.h11_checked import checked_response
from proxy64.proto.http_forward import Exchanged, Forward, OriginFailed
from proxy64.proto.http_headers import ResponseScan, request_body_length
from proxy64.proto.httpproxy import ForwardTarget
from proxy64.proto.session import ClientLost

logger = logging.getLogger(__name__)


class _ClientGone(Exception):
    """The client closed or broke its connection: nothing more can be said to it."""


async def forward(
    command: Forward,
    client: socket.socket,
    record: ConnectionRecord | None,
    ctx: ProxyContext,
    *,
    dialed: Dialed,
    stream: Callable[[], trio.SocketStream],
) -> Exchanged | OriginFailed | ClientLost:
    """The executor's helper for `Forward` (a `DialedHelper`): one exchange on dialed,
    the upstream the executor holds, whose record it fills; and how it went. The client is
    read and written on its fd; stream() is asked for only to move a large body."""
    assert record is not None, "Forward without the upstream's record"
    upstream = Upstream(dialed, record, command.upstream, command.sent)
    exchange = _Exchange(
        client.fileno(), stream, command.conn, command.target, upstream, idle=ctx.idle_timeout
    )
    try:
        try:
            done = await exchange.run()
        except h11.LocalProtocolError as exc:
            # h11 refused to pass on what the origin sent (e.g. a body longer than its
            # Content-Length): the origin's fault, reported as such.
            raise UpstreamFailed(
                f"{upstream.destination} sent a response that cannot be forwarded ({exc})"
            ) from None
    except UpstreamFailed as exc:
        logger.debug("http %s: %s", record.client, exc)  # the recorder logs the outcome
        return OriginFailed(str(exc), exc.http_status, exc.stale, upstream.responded)
    except (_ClientGone, h11.RemoteProtocolError, trio.TooSlowError) as exc:
        return ClientLost(client_ended(exc))
    after, outside = done
    reusable = upstream.end_cycle()
    return Exchanged(upstream.conn if reusable else None, after, outside)


class _Exchange:
    """One request and its response."""

    __slots__ = (
        "after_request",
        "client_stream",
        "conn",
        "fd",
        "idle",
        "out",
        "response_outside",
        "target",
        "up",
    )

    def __init__(
        self,
        fd: int,
        client_stream: Callable[[], trio.SocketStream],
        conn: h11.Connection,
        target: ForwardTarget,
        up: Upstream,
        *,
        idle: float,
    ) -> None:
        self.fd = fd  # the client's
        self.client_stream = client_stream
        self.idle = idle
        self.conn = conn
        self.target = target
        self.up = up
        # the request body went outside h11: the bytes after it (and whether it closed)
        self.after_request: tuple[bytes, bool] | None = None
        self.response_outside = False
        # encoded bytes for either side, written in one call when the side must be waited
        # for (each phase writes what it holds before the next begins)
        self.out = _Pending()

    # --- the client's side -------------------------------------------------------------------

    async def _receive(self, deadline: float) -> None:
        """One read from the client into its h11 machine; a wait, only when nothing is
        there, ends at deadline with trio.TooSlowError."""
        fd = self.fd
        while True:
            try:
                data: bytes | None = os.read(fd, HTTP_BODY_CHUNK)
            except BlockingIOError:
                data = None
            except OSError:  # reset, timed out, unreachable: the same as an EOF here
                data = b""
            if data is not None:
                break
            # wait outside the except block: inside it the BlockingIOError and its
            # traceback would stay alive for as long as the wait lasts
            await wait(Readable(fd, deadline))
        if not self.conn.trailing_data[1]:  # h11 refuses data after EOF
            self.conn.receive_data(data)

    async def _write(self, data: bytes) -> None:
        try:
            await write_all(self.fd, data)
        except OSError:  # EPIPE, reset, or already closed
            raise _ClientGone from None

    async def _client_event(self, deadline: float = math.inf) -> Next:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._receive(deadline)

    # --- the exchange ----------------------------------------------------------------------

    async def run(self) -> tuple[tuple[bytes, bool] | None, bool]:
        """Forward the request and the response; (after_request, response_outside)."""
        up, idle = self.up, self.idle
        up.requests += 1
        head = up.conn.send(self.target.request) or b""
        if not await self._request_body_outside(head):
            await self._copy_request_body(head)
        # What is encoded for the client is written in one call when the origin's response
        # is already here (head and body of a small response: one write, not two).
        out = self.out
        while True:
            event = up.poll()
            if event is h11.NEED_DATA:
                if out.size:
                    await self._write(out.take())
                await up.receive(idle)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 and 103 from the origin: the client had its own 100
            if isinstance(event, h11.Response):
                scan = up.response(event, self.target.request.method)
                response = checked_response(event.status_code, scan.forwarded, event.reason)
                out.add(self.conn.send(response))
                if await self._response_body_outside(scan):
                    break
            elif isinstance(event, (h11.Data, h11.EndOfMessage)):
                if await _pass_body(event, self.conn, out, self._write):
                    break
            else:  # ConnectionClosed or PAUSED before the response ended
                raise up.failed("closed the connection before answering")
        return self.after_request, self.response_outside

    async def _request_body_outside(self, head: bytes) -> bool:
        """Move a request body of known length (Content-Length; none at all is length 0,
        RFC 9112 §6.3 rule 7) outside h11 when it is large, or when all of it is already
        here (head and body in one write, no h11 events: a request without content costs
        neither machine an end-of-message); False: h11 carries it. `head` is the encoded
        request head, written with the first body bytes."""
        if self.conn.their_state is not h11.SEND_BODY:
            return False  # a retry of a request whose end h11 has already read
        length = request_body_length(self.target.request.headers.raw_items())
        if length is None:
            return False
        buffered, closed = self.conn.trailing_data
        whole = len(buffered) >= length
        if not whole and length - len(buffered) < HTTP_RAW_BODY_MIN:
            return False
        up = self.up
        self.after_request = (buffered[length:], closed)
        up.sent_outside = True
        if whole:
            await up.write(head + buffered[:length] if length else head)
            return True
        move = partial(
            move_body,
            self.client_stream(),
            up.dialed.stream,
            buffered[:length],
            length,
            prefix=head,
            idle=self.idle,
            counted_read=_uncounted,
            counted_written=up.count_up,
        )
        try:
            await in_task(move)
        except BodyCut as exc:
            if exc.reading:
                raise _ClientGone from None
            raise up.failed(str(exc)) from None
        return True

    async def _response_body_outside(self, scan: ResponseScan) -> bool:
        """Move a Content-Length response body outside h11 when it is large, or when all of
        it is already here (a small response: head and body in one write, no h11 Data or
        EndOfMessage on either machine); False: h11 carries it. The encoded response head
        waiting in self.out is written with the first body bytes."""
        length = scan.body_length
        if length is None:
            return False
        up, out = self.up, self.out
        buffered, closed = up.conn.trailing_data
        whole = len(buffered) >= length
        if not whole and length - len(buffered) < HTTP_RAW_BODY_MIN:
            return False
        # Bytes after the body, or an EOF already seen: the connection is not reused.
        up.received_outside = len(buffered) <= length and not closed and scan.keeps_alive
        self.response_outside = True
        if whole:  # counted in the record as it arrived; the client side is not counted
            out.add(buffered[:length])
            await self._write(out.take())
            return True
        move = partial(
            move_body,
            up.dialed.stream,
            self.client_stream(),
            buffered[:length],
            length,
            prefix=out.take(),
            idle=self.idle,
            counted_read=up.count_down,
            counted_written=_uncounted,
        )
        try:
            await in_task(move)
        except BodyCut as exc:
            if exc.reading:
                up.received_outside = False
                raise up.failed(f"{exc} (response)") from None
            raise _ClientGone from None
        return True

    async def _copy_request_body(self, head: bytes) -> None:
        """The request head and a body h11 frames; what is already here goes in one write."""
        up, out = self.up, self.out
        out.add(head)
        if self.conn.their_state is h11.DONE:  # a retry: the request had no content
            out.add(up.conn.send(h11.EndOfMessage()))
            await up.write(out.take())
            return
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:  # a timeout scope only when a read must wait
                if out.size:
                    await up.write(out.take())
                event = await self._client_event(trio.current_time() + self.idle)
            if not isinstance(event, (h11.Data, h11.EndOfMessage)):
                raise _ClientGone
            if await _pass_body(event, up.conn, out, up.write):
                return


async def _pass_body(
    event: h11.Data | h11.EndOfMessage,
    into: h11.Connection,
    out: _Pending,
    write: Callable[[bytes], Awaitable[None]],
) -> bool:
    """One body event of a message passed on: encoded by the other side's machine `into`
    (which frames it again: chunked, or a length) and written by `write` once a chunk's
    worth waits or the message ends. True at the end of the message. RFC 9110 §6.5.1:
    trailers may be discarded when de-chunking."""
    if isinstance(event, h11.Data):
        out.add(into.send(h11.Data(data=event.data)))
        if out.size >= HTTP_BODY_CHUNK:
            await write(out.take())
        return False
    out.add(into.send(h11.EndOfMessage()))
    if out.size:
        await write(out.take())
    return True


class _Pending:
    """Encoded bytes waiting to be written in one call (one copy at most, none for one part)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes | None) -> None:
        if data:
            self.parts.append(data)
            self.size += len(data)

    def take(self) -> bytes:
        parts, self.parts, self.size = self.parts, [], 0
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _uncounted(amount: int) -> None:
    """The client side's bytes are not in the record (it counts the origin's side)."""
