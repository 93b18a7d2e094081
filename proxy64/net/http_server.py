# The HTTP proxy front end: a thin trio loop around h11 (server side to the client, client
# side to the origin). proxy64.proto.httpproxy decides what a request means; this module
# only reads, feeds h11, dials through ctx.dialer and copies.
#
# Invariants: no body is ever buffered whole (Data events are forwarded as they arrive);
# every ConnectionRecord is finished exactly once; an error answer is only sent while no
# response has started (after that the client connection is closed instead); the client's
# bytes after a CONNECT head (h11 trailing_data) reach the destination first.
# RFC 9110 §9.3.6 (CONNECT), RFC 9112 §3.2 (request targets), §9.3 (persistence), §9.6
# (lingering close), RFC 9110 §10.1.1 (100-continue answered by the proxy).
# Lean per-connection path: on a real socket the client's fd is read and written
# directly, waiting only when a call would block; streams are closed synchronously.
# Bodies of known length (Content-Length, RFC 9112 §6.3) of HTTP_RAW_BODY_MIN or more still
# to come bypass h11: h11 parses the heads, http_upstream.move_body() moves exactly the
# body's bytes (splice(2) between sockets). A machine that saw only a head stays in
# SEND_BODY, so at the end of such a cycle it is replaced by a fresh one, fed the bytes that
# followed the body, and keep-alive is decided by the same rule h11 uses (RFC 9112 §9.3).

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

import h11
import trio

from proxy64.defaults import (
    HTTP_BODY_CHUNK,
    HTTP_DIAL_GRACE,
    HTTP_KEEPALIVE_TIMEOUT,
    HTTP_LINGER_BYTES,
    HTTP_LINGER_TIME,
    HTTP_MAX_HEAD,
    HTTP_RAW_BODY_MIN,
)
from proxy64.destination import Destination
from proxy64.errors import Proxy64Error, RemoteProtocolError
from proxy64.net.auth_gate import checked_proxy_auth
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.http_upstream import BodyCut, Next, Upstream, UpstreamFailed, move_body
from proxy64.net.hub_front import borrow_slot, client_text
from proxy64.net.outcomes import aborted, client_ended
from proxy64.net.relay import close_stream, write_fd_all
from proxy64.net.resets import reset_on_close
from proxy64.proto.http_headers import (
    downstream_response_headers,
    fixed_body_length,
    keeps_alive,
    response_body_length,
)
from proxy64.proto.httpproxy import (
    TUNNEL_ESTABLISHED,
    ConnectTarget,
    ForwardTarget,
    LocalAnswer,
    classify,
    error_response,
    tunnel_established,
)

logger = logging.getLogger(__name__)


class _ClientGone(Exception):
    """The client closed or broke its connection: nothing more can be said to it."""


def _peer_name(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)  # memory streams in tests have none
    try:
        return client_text(sock.getpeername(), "unknown") if sock is not None else "unknown"
    except OSError:
        return "unknown"


def new_machine() -> h11.Connection:
    """The client side's h11 machine (the head bounded by HTTP_MAX_HEAD: 431 beyond)."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=HTTP_MAX_HEAD)


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the hub-driven front end (http_front.py) hands a connection to this task
    path: its h11 machine with what it consumed, and how far it got: a request head taken
    from the machine, or the machine's refusal of the head, or the handshake deadline
    passed; for a CONNECT, the dial already made (or in flight, or refused) and the part
    of the 200 the client has not taken yet."""

    conn: h11.Connection
    request: h11.Request | None = None
    error: h11.RemoteProtocolError | None = None
    timed_out: bool = False
    dial: Dialed | PendingDial | Proxy64Error | None = None
    unsent_reply: bytes | None = None  # None: the 200 is not written at all yet


class _ClientSession:
    def __init__(
        self,
        stream: trio.SocketStream,
        ctx: ProxyContext,
        client: str,
        conn: h11.Connection | None = None,
    ) -> None:
        self.stream = stream
        self.ctx = ctx
        self.client = client
        self.conn = conn if conn is not None else new_machine()
        self.upstream: Upstream | None = None
        self.dial: Dialed | PendingDial | Proxy64Error | None = None  # done by the front
        self.unsent_reply: bytes | None = None
        # the raw fd of a real socket (-1: another stream, e.g. a test's memory stream)
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        # This cycle's request body went outside h11: the bytes the client sent after it
        # (and whether it had closed), for the next cycle's machine.
        self.after_request: tuple[bytes, bool] | None = None
        self.response_outside = False  # this cycle's response body went outside h11

    # --- talking to the client -----------------------------------------------------------

    async def _receive(self, deadline: float = math.inf) -> None:
        """One read from the client into h11. A wait, only when nothing is there, ends at
        `deadline` with trio.TooSlowError: no cancel scope when the bytes are already in."""
        fd = self.fd
        if fd >= 0:
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
                if deadline == math.inf:
                    await trio.lowlevel.wait_readable(fd)
                else:
                    with trio.fail_at(deadline):
                        await trio.lowlevel.wait_readable(fd)
        else:
            try:
                with trio.fail_at(deadline):
                    data = await self.stream.receive_some(HTTP_BODY_CHUNK)
            except trio.BrokenResourceError:
                data = b""
        if not self.conn.trailing_data[1]:  # h11 refuses data after EOF
            self.conn.receive_data(data)

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self._write(data)

    async def _write(self, data: bytes) -> None:
        fd = self.fd
        if fd < 0:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _ClientGone from None
            return
        try:
            await write_fd_all(fd, data)
        except OSError:  # EPIPE, reset, or already closed
            raise _ClientGone from None

    async def _client_event(self, deadline: float = math.inf) -> Next:
        """The client's next event; reads (waiting until `deadline`) only while h11 needs."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._receive(deadline)

    async def send_error(self, status: int, message: str) -> None:
        """A whole error answer, then a lingering close (RFC 9112 §9.6)."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response already started: the caller closes the connection
        response, body = error_response(status, message)
        try:
            await self._send(response)
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
            await self.stream.send_eof()
        except (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        drained = 0
        with trio.move_on_after(HTTP_LINGER_TIME):
            while drained < HTTP_LINGER_BYTES:
                try:
                    data = await self.stream.receive_some(HTTP_BODY_CHUNK)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                drained += len(data)

    # --- the request loop ----------------------------------------------------------------

    async def _next_request(self, first: bool) -> h11.Request | None:
        # Timeouts as deadlines: a scope is entered only around a read that must wait.
        if not first and not self.conn.trailing_data[0]:
            # Keep-alive: wait for the first byte of the next request (or its EOF).
            if not self.conn.trailing_data[1]:
                idle = min(HTTP_KEEPALIVE_TIMEOUT, self.ctx.idle_timeout)
                try:
                    await self._receive(trio.current_time() + idle)
                except trio.TooSlowError:
                    return None  # idle too long
            if not self.conn.trailing_data[0]:
                return None  # the client closed between requests
        try:
            event = await self._client_event(trio.current_time() + self.ctx.handshake_timeout)
        except trio.TooSlowError:
            if self.conn.trailing_data[0]:
                await self.send_error(
                    408, f"the request head was not complete after {self.ctx.handshake_timeout:g} s"
                )
            return None
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed

    async def run(self, resume: Resume | None = None) -> None:
        first = True
        try:
            while True:
                try:
                    if resume is not None:
                        request = await self._resumed(resume)
                        resume = None
                    else:
                        request = await self._next_request(first)
                except h11.RemoteProtocolError as exc:
                    if not self.conn.trailing_data[1]:  # not just the client vanishing
                        problem = _head_problem(exc)
                        self._refused(problem)
                        await self.send_error(exc.error_status_hint, problem)
                    return
                if request is None:
                    return
                try:
                    target = classify(request)
                    await checked_proxy_auth(
                        self.ctx, self.client, request.headers.raw_items(), self.ctx.credentials
                    )
                except RemoteProtocolError as exc:
                    method = request.method.decode("ascii", "replace")
                    self._refused(f"refused {method} {_printable(request.target)}: {exc}")
                    await self.send_error(exc.http_status, str(exc))
                    return
                if isinstance(target, ConnectTarget):
                    await self._tunnel(target, request.http_version)
                    return
                if isinstance(target, LocalAnswer):
                    await self._answer(target)
                elif not await self._forward(target):
                    return
                if not self._next_cycle(request):
                    return
                first = False
        except (_ClientGone, trio.TooSlowError, h11.RemoteProtocolError):
            return  # the client stalled or broke the stream after its head: just close
        finally:
            if self.upstream is not None:
                upstream, self.upstream = self.upstream, None
                with trio.CancelScope(shield=True):
                    await upstream.close("ok", self.ctx)

    async def _resumed(self, resume: Resume) -> h11.Request | None:
        """Continue from where the front end stopped: as _next_request() would have."""
        self.dial, self.unsent_reply = resume.dial, resume.unsent_reply
        if resume.error is not None:
            raise resume.error
        if resume.request is not None:
            return resume.request
        if resume.timed_out:
            if self.conn.trailing_data[0]:
                await self.send_error(
                    408, f"the request head was not complete after {self.ctx.handshake_timeout:g} s"
                )
            return None
        return await self._next_request(True)

    def _next_cycle(self, request: h11.Request) -> bool:
        """Ready the client's machine for its next request; False when the connection ends."""
        if self.after_request is None and not self.response_outside:
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()
                return True
            return False
        # A body went outside h11: same verdict as h11's (RFC 9112 §9.3), fresh machine.
        if self.after_request is not None:
            after, closed = self.after_request
        else:
            after, closed = self.conn.trailing_data
        done = self.response_outside or self.conn.our_state is h11.DONE
        self.after_request, self.response_outside = None, False
        if not (done and keeps_alive(request.headers.raw_items(), request.http_version)):
            return False
        self.conn = new_machine()
        if after:
            self.conn.receive_data(after)
        if closed:
            self.conn.receive_data(b"")
        return True

    def _refused(self, outcome: str) -> None:
        """A request refused before any destination: still the connection's one log line."""
        self.ctx.recorder.finish(
            ConnectionRecord(front_end="http", client=self.client, outcome=outcome)
        )

    async def _answer(self, answer: LocalAnswer) -> None:
        """Answer as the final recipient (Max-Forwards: 0), discarding any request content."""
        deadline = trio.current_time() + self.ctx.idle_timeout
        while not isinstance(event := await self._client_event(deadline), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                raise _ClientGone
        await self._send(answer.response)
        await self._send(h11.Data(data=answer.body))
        await self._send(h11.EndOfMessage())

    # --- dialing -------------------------------------------------------------------------

    async def _dial(self, destination: Destination, record: ConnectionRecord) -> Dialed | None:
        """Dial, or answer the error (and finish the record) and return None.

        The dialer's connect_now() first: a loopback/local handshake completes
        inside connect(2), so the dial costs no await and no cancel scope; one still in
        flight is finished by the dialer under its own deadline. connect() otherwise (a
        name not cached, several addresses to race)."""
        try:
            done, self.dial = self.dial, None  # a dial the hub-driven front end made
            if isinstance(done, Proxy64Error):
                raise done
            dialed = (
                done
                if done is not None
                else self.ctx.dialer.connect_now(destination, self.client)
            )
            if isinstance(dialed, PendingDial):
                dialed = await self.ctx.dialer.finish(dialed)
            elif dialed is None:
                with trio.fail_after(self.ctx.connect_timeout + HTTP_DIAL_GRACE):
                    dialed = await self.ctx.dialer.connect(destination, self.client)
        except Proxy64Error as exc:
            status, message, told = exc.http_status, str(exc), exc.reply_text()
            record.strict_nat64_refuses = exc.strict_nat64_refuses
        except trio.TooSlowError:
            status, message = 504, f"cannot connect to {destination}: timed out"
            told = message
        else:
            record.reached_by(dialed)
            return dialed
        logger.debug("http %s: %s", self.client, message)  # the recorder logs the outcome
        record.outcome = message
        self.ctx.recorder.finish(record)
        await self.send_error(status, told)  # the log names a denying rule, the reply not
        return None

    async def _tunnel(self, target: ConnectTarget, http_version: bytes) -> None:
        # Take the CONNECT's end of message: h11 then pauses, waiting for our answer;
        # a body on a CONNECT has no meaning (RFC 9110 §9.3.6) and is dropped.
        # Usually all of it is already here: no timeout scope unless a read is needed.
        deadline = trio.current_time() + self.ctx.handshake_timeout
        while (event := self.conn.next_event()) is not h11.PAUSED:
            if isinstance(event, h11.ConnectionClosed):
                return
            if event is h11.NEED_DATA:
                await self._receive(deadline)
        record = ConnectionRecord(
            front_end="http-connect", client=self.client, destination=target.destination
        )
        dialed = await self._dial(target.destination, record)
        if dialed is None:
            return
        try:
            # h11's bytes for this 200, encoded once (the machine is not used after it)
            established = tunnel_established(http_version)
            if self.unsent_reply is not None:  # the front end wrote the first part
                await self._write(self.unsent_reply)
            elif established is None:
                await self._send(TUNNEL_ESTABLISHED)
            else:
                await self._write(established)
            early = self.conn.trailing_data[0]  # sent by the client before our 200
            if early:
                await dialed.stream.send_all(early)
                record.bytes_up += len(early)
            await self.ctx.relay(self.stream, dialed.stream, record)
            if record.outcome == "open":
                record.outcome = "ok"
        except _ClientGone:
            record.outcome = "client closed before the tunnel started"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            record.outcome = f"destination closed: {exc}"
        except BaseException as exc:
            if record.outcome == "open":
                record.outcome = aborted(exc)
            raise
        finally:
            self.ctx.recorder.finish(record)
            await close_stream(dialed.stream)  # a socket: at once, no checkpoint

    async def _upstream_for(self, destination: Destination) -> Upstream | None:
        current = self.upstream
        if current is not None:
            if current.destination == destination and current.reusable:
                return current
            self.upstream = None
            await current.close("ok", self.ctx)
        record = ConnectionRecord(front_end="http", client=self.client, destination=destination)
        dialed = await self._dial(destination, record)
        if dialed is None:
            return None
        self.upstream = Upstream(dialed, record)
        return self.upstream

    # --- forwarding one request ----------------------------------------------------------

    async def _forward(self, target: ForwardTarget) -> bool:
        """Forward one request and its response; True when the client connection lives on."""
        for attempt in (1, 2):
            upstream = await self._upstream_for(target.destination)
            if upstream is None:
                return False
            try:
                try:
                    await self._exchange(target, upstream)
                except h11.LocalProtocolError as exc:
                    # h11 refused to pass on what the origin sent (e.g. a body longer than
                    # its Content-Length): the origin's fault, reported as such.
                    raise UpstreamFailed(
                        f"{target.destination} sent a response that cannot be forwarded ({exc})"
                    ) from None
            except UpstreamFailed as exc:
                self.upstream = None
                if exc.stale and target.retryable and attempt == 1:
                    # The origin closed a kept-alive connection as we reused it: an ordinary
                    # end for that connection; RFC 9110 §9.2.2 lets us retry an idempotent
                    # request without content on a new one.
                    logger.debug("http %s: %s; retrying on a new connection", self.client, exc)
                    await upstream.close("ok", self.ctx)
                    continue
                logger.debug("http %s: %s", self.client, exc)  # the recorder logs the outcome
                await upstream.close(str(exc), self.ctx)
                if not upstream.responded:
                    await self.send_error(exc.http_status, str(exc))
                else:
                    reset_on_close(self.stream)  # a cut response must not look complete
                return False
            except (_ClientGone, h11.RemoteProtocolError, trio.TooSlowError) as exc:
                self.upstream = None
                await upstream.close(client_ended(exc), self.ctx)
                raise _ClientGone from None
            if not upstream.end_cycle():
                self.upstream = None
                await upstream.close("ok", self.ctx)
            return True
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _exchange(self, target: ForwardTarget, upstream: Upstream) -> None:
        idle = self.ctx.idle_timeout
        if target.expects_continue and self.conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        upstream.requests += 1
        head = upstream.conn.send(target.request) or b""
        if not await self._request_body_outside(target, upstream, idle, head):
            await self._copy_request_body(upstream, idle, head)
        # What is encoded for the client is written in one call when the origin's response
        # is already here (head and body of a small response: one write, not two).
        out = _Pending()
        while True:
            event = upstream.poll()
            if event is h11.NEED_DATA:
                if out.size:
                    await self._write(out.take())
                event = await upstream.next_event(idle)
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 and 103 from the origin: the client had its own 100
            if isinstance(event, h11.Response):
                headers = downstream_response_headers(
                    list(event.headers.raw_items()), event.http_version
                )
                response = h11.Response(
                    status_code=event.status_code, headers=headers, reason=event.reason
                )
                out.add(self.conn.send(response))
                if await self._response_body_outside(target, upstream, event, idle, out):
                    return
            elif isinstance(event, h11.Data):
                out.add(self.conn.send(h11.Data(data=event.data)))
                if out.size >= HTTP_BODY_CHUNK:
                    await self._write(out.take())
            elif isinstance(event, h11.EndOfMessage):
                # RFC 9110 §6.5.1: trailers may be discarded when de-chunking.
                out.add(self.conn.send(h11.EndOfMessage()))
                if out.size:
                    await self._write(out.take())
                return
            else:  # ConnectionClosed or PAUSED before the response ended
                raise upstream.failed("closed the connection before answering")

    async def _request_body_outside(
        self, target: ForwardTarget, upstream: Upstream, idle: float, head: bytes
    ) -> bool:
        """Move a Content-Length request body outside h11 when it is large, or when all of
        it is already here (head and body in one write, no h11 events); False:
        h11 carries it. `head` is the encoded request head, written with the first body
        bytes."""
        if self.conn.their_state is not h11.SEND_BODY:
            return False  # no body, or a retry of a request without content
        length = fixed_body_length(target.request.headers.raw_items())
        if length is None:
            return False
        buffered, closed = self.conn.trailing_data
        whole = len(buffered) >= length
        if not whole and length - len(buffered) < HTTP_RAW_BODY_MIN:
            return False
        self.after_request = (buffered[length:], closed)
        upstream.sent_outside = True
        if whole:
            await upstream.write(head + buffered[:length] if length else head)
            return True
        try:
            await move_body(
                self.stream,
                upstream.dialed.stream,
                buffered[:length],
                length,
                prefix=head,
                idle=idle,
                counted_read=_uncounted,
                counted_written=upstream.count_up,
            )
        except BodyCut as exc:
            if exc.reading:
                raise _ClientGone from None
            raise upstream.failed(str(exc)) from None
        return True

    async def _response_body_outside(
        self,
        target: ForwardTarget,
        upstream: Upstream,
        response: h11.Response,
        idle: float,
        out: _Pending,
    ) -> bool:
        """Move a Content-Length response body outside h11 when it is large, or when all of
        it is already here (a small response: head and body in one write, no h11 Data or
        EndOfMessage on either machine); False: h11 carries it. The encoded
        response head waiting in `out` is written with the first body bytes."""
        headers = response.headers.raw_items()
        length = response_body_length(target.request.method, response.status_code, headers)
        if length is None:
            return False
        buffered, closed = upstream.conn.trailing_data
        whole = len(buffered) >= length
        if not whole and length - len(buffered) < HTTP_RAW_BODY_MIN:
            return False
        # Bytes after the body, or an EOF already seen: the connection is not reused.
        upstream.received_outside = (
            len(buffered) <= length and not closed and keeps_alive(headers, response.http_version)
        )
        self.response_outside = True
        if whole:  # counted in the record as it arrived; the client side is not counted
            out.add(buffered[:length])
            await self._write(out.take())
            return True
        try:
            await move_body(
                upstream.dialed.stream,
                self.stream,
                buffered[:length],
                length,
                prefix=out.take(),
                idle=idle,
                counted_read=upstream.count_down,
                counted_written=_uncounted,
            )
        except BodyCut as exc:
            if exc.reading:
                upstream.received_outside = False
                raise upstream.failed(f"{exc} (response)") from None
            raise _ClientGone from None
        return True

    async def _copy_request_body(self, upstream: Upstream, idle: float, head: bytes) -> None:
        """The request head and a body h11 frames; what is already here goes in one write."""
        out = _Pending()
        out.add(head)
        if self.conn.their_state is h11.DONE:  # a retry: the request had no content
            out.add(upstream.conn.send(h11.EndOfMessage()))
            await upstream.write(out.take())
            return
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:  # a timeout scope only when a read must wait
                if out.size:
                    await upstream.write(out.take())
                event = await self._client_event(trio.current_time() + idle)
            if isinstance(event, h11.Data):
                out.add(upstream.conn.send(h11.Data(data=event.data)))
                if out.size >= HTTP_BODY_CHUNK:
                    await upstream.write(out.take())
            elif isinstance(event, h11.EndOfMessage):
                out.add(upstream.conn.send(h11.EndOfMessage()))
                if out.size:
                    await upstream.write(out.take())
                return
            else:
                raise _ClientGone


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


def _head_problem(exc: h11.RemoteProtocolError) -> str:
    if exc.error_status_hint == 431:
        return f"the request head is larger than {HTTP_MAX_HEAD} bytes"
    if exc.error_status_hint == 501:
        return f"{exc}: send the body with Content-Length or chunked"
    return f"the request head is not valid HTTP/1.1 ({_printable(str(exc))})"


_BYTES_REPR = re.compile(r"""(?:bytearray\()?b(['"])(.*?)\1\)?""")


def _printable(text: str | bytes) -> str:
    """h11 quotes raw input as Python reprs (bytearray(b'...')); a person reads "...".
    Control characters are escaped so a log line stays one line."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "backslashreplace")
    text = _BYTES_REPR.sub(lambda m: f'"{m.group(2)}"', text)
    return text.encode("unicode_escape").decode("ascii")[:200]


async def handle_http_client(stream: trio.SocketStream, ctx: ProxyContext) -> None:
    """One client connection on the task path, until it closes. A listener with the
    hub-driven front end (http_front.py, wired by app.py) serves a CONNECT without a task
    when it can and resumes everything else here."""
    client = _peer_name(stream)
    slot = borrow_slot(ctx, object(), client)  # a new token: the connection's borrower
    await serve_http_connection(stream, ctx, client, slot, None)


async def serve_http_connection(
    stream: trio.SocketStream,
    ctx: ProxyContext,
    client: str,
    slot: object | None,
    resume: Resume | None,
) -> None:
    """Serve a connection to its end, from the start or from a Resume; `slot` is the
    --max-connections borrower it holds (released here), None: refused with 503."""
    session = _ClientSession(stream, ctx, client, resume.conn if resume is not None else None)
    try:
        if slot is None:
            refusal = ctx.connection_slots.refusal(client)
            logger.warning("http %s: refused, %s", client, refusal)
            await session.send_error(503, f"{refusal}; try again later")
            return
        try:
            await session.run(resume)
        finally:
            ctx.connection_slots.release_on_behalf_of(slot)
    finally:
        await close_stream(stream)  # a socket: at once, no checkpoint
