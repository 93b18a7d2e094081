# One kept-alive connection from the HTTP proxy to an origin during one exchange: the h11
# client machine the session machine lends it, the ConnectionRecord it fills (bytes
# counted on the wire) and the failures it reports. Used by proxy64.net.http_exchange
# only; the executor closes the connection when the machine ends its record.
#
# Invariant: every failure of the origin's side is an UpstreamFailed carrying the HTTP
# status to answer (502, or 504 when the origin stays silent) and whether it is "stale": a
# reused connection the origin closed while it sat idle, which RFC 9110 §9.2.2 lets the
# proxy retry for idempotent requests.
# Lean path: a real socket is read/written on its fd, waiting only when a call would block,
# through net/steps.py's waits (the idle timeout is the wait's deadline), without a trio
# stream; move_body() and a stream that is not a socket run in a task (steps.in_task) on
# Dialed.stream, made then.
# Bodies of known length (Content-Length, RFC 9112 §6.3 rule 6) bypass h11: move_body()
# copies exactly that many bytes between the two streams, with splice(2) between two
# sockets, never reading a byte past the body (the next message stays in the kernel).

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial

import h11
import trio

from proxy64.defaults import HTTP_BODY_CHUNK, HTTP_SPLICE_BODY_MIN
from proxy64.net.context import ConnectionRecord
from proxy64.net.dial_types import Dialed
from proxy64.net.relay import write_fd_all
from proxy64.net.splice import HAVE_SPLICE, SpliceBroken, SpliceEnd, Stall, splice_direction
from proxy64.net.steps import Readable, in_task, wait, write_all
from proxy64.proto.http_forward import upstream_machine
from proxy64.proto.http_headers import ResponseScan, scan_response

logger = logging.getLogger(__name__)

Next = h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]


class UpstreamFailed(Exception):
    """The origin broke its side; http_status is what to answer if no response started."""

    def __init__(self, message: str, http_status: int = 502, *, stale: bool = False) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.stale = stale  # a reused connection the origin had closed: worth one retry


class Upstream:
    """One connection to an origin, with its own h11 client machine and record."""

    __slots__ = (
        "conn",
        "destination",
        "dialed",
        "fd",
        "received_outside",
        "record",
        "requests",
        "responded",
        "sent_outside",
    )

    def __init__(
        self, dialed: Dialed, record: ConnectionRecord, conn: h11.Connection, requests: int = 0
    ) -> None:
        self.dialed = dialed
        # the socket's fd for the lean path; -1: not a socket (dialed.stream in a task)
        self.fd = -1 if dialed.sock is None else dialed.sock.fileno()
        self.destination = dialed.destination
        self.record = record
        self.conn = conn  # the session machine's (proto/http_forward.upstream_machine)
        self.responded = False  # a response head arrived for the current request
        self.requests = requests  # requests sent on this connection, the current one included
        # This cycle's request body went outside h11 (the machine then stays in SEND_BODY).
        self.sent_outside = False
        # This cycle's response body went outside h11: whether the connection may persist
        # (RFC 9112 §9.3); None while h11 frames the response.
        self.received_outside: bool | None = None

    def count_up(self, amount: int) -> None:
        self.record.bytes_up += amount

    def count_down(self, amount: int) -> None:
        self.record.bytes_down += amount

    def end_cycle(self) -> bool:
        """After a whole exchange: ready the machine for the next request on this
        connection; False when the connection cannot be reused. When a body went outside
        h11, the machine (stuck in SEND_BODY) is replaced by a fresh one."""
        self.responded = False
        if not self.sent_outside and self.received_outside is None:
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()
                return True
            return False
        if self.received_outside is None:
            trailing, closed = self.conn.trailing_data
            keep = self.conn.their_state is h11.DONE and not trailing and not closed
        else:
            keep = self.received_outside
        self.sent_outside, self.received_outside = False, None
        if keep:
            self.conn = upstream_machine()
        return keep

    def failed(self, problem: str, http_status: int = 502) -> UpstreamFailed:
        """The error for a broken origin connection; stale if it died before answering a
        request that was not its first (the origin closed it while it sat idle)."""
        stale = self.requests > 1 and not self.responded
        return UpstreamFailed(f"{self.destination} {problem}", http_status, stale=stale)

    async def write(self, data: bytes) -> None:
        """Write bytes already encoded by self.conn, counted in the record."""
        try:
            if self.fd >= 0:
                await write_all(self.fd, data)
            else:
                await in_task(partial(self.dialed.stream.send_all, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self.failed(f"closed the connection ({exc})") from None
        self.record.bytes_up += len(data)

    def poll(self) -> Next:
        """The next event from what has already arrived (NEED_DATA: none), no I/O; a
        Response is then taken by response()."""
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            if not self.conn.trailing_data[1]:
                problem = f"sent a broken response ({exc})"
            elif self.responded:
                problem = "closed the connection in the middle of the response"
            else:
                problem = "closed the connection before answering"
            raise self.failed(problem) from None
        return event

    def response(self, response: h11.Response, request_method: bytes) -> ResponseScan:
        """A response head poll() gave: what it says (one pass over its fields), refused
        when it cannot be passed on."""
        scan = scan_response(
            request_method,
            response.status_code,
            response.headers.raw_items(),
            response.http_version,
        )
        if scan.oversized is not None:  # RFC 9110 §8.6: never pass on what overflows
            raise UpstreamFailed(
                f"{self.destination} sent Content-Length {scan.oversized[:40].decode('ascii')}, "
                "larger than a 63-bit integer holds (RFC 9110 §8.6)",
                502,
                stale=False,
            )
        self.responded = True
        return scan

    async def receive(self, idle: float) -> None:
        """One read from the origin fed to self.conn, for when poll() says NEED_DATA (an
        origin that broke its side is an EOF); UpstreamFailed (504) after idle seconds of
        silence."""
        try:
            data = await self._receive(idle)
        except trio.TooSlowError:
            raise UpstreamFailed(
                f"{self.destination} sent nothing for {idle:g} s", http_status=504
            ) from None
        except (trio.BrokenResourceError, OSError) as exc:
            data = b""
            logger.debug("upstream %s broke: %s", self.destination, exc)
        self.record.bytes_down += len(data)
        self.conn.receive_data(data)

    async def _receive(self, idle: float) -> bytes:
        """One read from the origin; a real socket is read on its fd (at once while a
        response is under way, once readable before its head). Raises trio.TooSlowError."""
        fd = self.fd
        if fd < 0:
            data: bytes = await in_task(partial(_receive_within, self.dialed.stream, idle))
            return data
        if self.responded:  # more of a response under way: often here already
            try:
                return os.read(fd, HTTP_BODY_CHUNK)
            except BlockingIOError:
                pass
        # else the request has just been written: the origin has to answer it first, and a
        # read now would find nothing (EAGAIN)
        deadline = trio.current_time() + idle
        while True:
            await wait(Readable(fd, deadline))
            try:
                return os.read(fd, HTTP_BODY_CHUNK)
            except BlockingIOError:
                continue


async def _receive_within(stream: trio.abc.Stream, idle: float) -> bytes:
    with trio.fail_after(idle):
        return bytes(await stream.receive_some(HTTP_BODY_CHUNK))


# --- bodies of known length, outside h11 ---------------------------------------------------


class BodyCut(Exception):
    """A body of known length did not get through whole. reading: the source side ended
    (EOF, reset or idle timeout); otherwise the destination could not take it."""

    def __init__(self, message: str, *, reading: bool) -> None:
        super().__init__(message)
        self.reading = reading


def stream_fd(stream: trio.abc.Stream) -> int:
    """The fd of a real socket stream, or -1 (memory streams in tests, TUN flows)."""
    return stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1


async def move_body(
    src: trio.abc.Stream,
    dst: trio.abc.Stream,
    first: bytes,
    length: int,
    *,
    prefix: bytes = b"",
    idle: float,
    counted_read: Callable[[int], None],
    counted_written: Callable[[int], None],
) -> None:
    """Move a body of `length` bytes: `first` (already received) and then the rest read from
    src, to dst. Never reads past the body. counted_read(n) after each read from src
    (first excluded: it was counted when it arrived), counted_written(n) after each write.
    `prefix` (a head not yet sent) is written in the same call as `first`, and counted too.
    Raises BodyCut; waits longer than `idle` for either side are a BodyCut too."""
    if first or prefix:
        await _write_exactly(dst, prefix + first, idle)
        counted_written(len(prefix) + len(first))
    left = length - len(first)
    if (
        HAVE_SPLICE
        and isinstance(src, trio.SocketStream)
        and isinstance(dst, trio.SocketStream)
        and left >= HTTP_SPLICE_BODY_MIN
    ):
        try:  # the relay's splice loop, for an exact count (proxy64/net/splice.py)
            end = await splice_direction(
                src.socket,
                dst.socket,
                on_read=counted_read,
                on_written=counted_written,
                length=left,
                stall_after=idle,
            )
        except SpliceBroken as exc:
            raise _body_cut(exc, idle) from None
        if end is not SpliceEnd.NO_PIPE:
            return
        # no pipe could be made (fds ran out): nothing was read, the copy below moves it all
    src_fd = stream_fd(src)
    while left:
        chunk = await _read_at_most(src, src_fd, min(left, HTTP_BODY_CHUNK), idle)
        counted_read(len(chunk))
        left -= len(chunk)
        await _write_exactly(dst, chunk, idle)
        counted_written(len(chunk))


async def _read_at_most(src: trio.abc.Stream, fd: int, most: int, idle: float) -> bytes:
    try:
        if fd < 0:
            with trio.fail_after(idle):
                data = bytes(await src.receive_some(most))
        else:
            while True:
                try:
                    data = os.read(fd, most)
                    break
                except BlockingIOError:
                    pass
                with trio.fail_after(idle):  # outside the except: no exception kept alive
                    await trio.lowlevel.wait_readable(fd)
    except trio.TooSlowError:
        raise BodyCut(f"sent nothing for {idle:g} s", reading=True) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise BodyCut(f"broke the connection ({exc})", reading=True) from None
    if not data:
        raise BodyCut("closed the connection in the middle of the body", reading=True)
    return data


async def _write_exactly(dst: trio.abc.Stream, data: bytes, idle: float) -> None:
    fd = stream_fd(dst)
    try:
        with trio.fail_after(idle):
            if fd < 0:
                await dst.send_all(data)
            else:
                await write_fd_all(fd, data)
    except trio.TooSlowError:
        raise BodyCut(f"took nothing for {idle:g} s", reading=False) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise BodyCut(f"closed the connection ({exc})", reading=False) from None


def _body_cut(exc: SpliceBroken, idle: float) -> BodyCut:
    """The splice loop's failure in this module's words (docs/http-proxy.md lists them)."""
    if exc.cause is Stall.CLOSED:
        return BodyCut("closed the connection in the middle of the body", reading=True)
    if exc.cause is Stall.SILENT:
        what = "sent" if exc.at_source else "took"
        return BodyCut(f"{what} nothing for {idle:g} s", reading=exc.at_source)
    what = "broke" if exc.at_source else "closed"
    return BodyCut(f"{what} the connection ({exc.reason})", reading=exc.at_source)
