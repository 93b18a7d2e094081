# One kept-alive connection from the HTTP proxy to an origin: its own h11 client machine,
# the ConnectionRecord it fills (bytes counted on the wire) and the failures it reports.
# Used by proxy64.net.http_server only.
#
# Invariant: every failure of the origin's side is an UpstreamFailed carrying the HTTP
# status to answer (502, or 504 when the origin stays silent) and whether it is "stale": a
# reused connection the origin closed while it sat idle, which RFC 9110 §9.2.2 lets the
# proxy retry for idempotent requests.
# Lean path (issue 7): a real socket is read/written on its fd, waiting (and entering the
# idle timeout scope) only when a call would block; closed synchronously.

from __future__ import annotations

import logging
import os

import h11
import trio

from proxy64.defaults import HTTP_BODY_CHUNK, HTTP_MAX_HEAD
from proxy64.net.context import ConnectionRecord, Dialed, ProxyContext
from proxy64.net.relay import close_stream

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

    def __init__(self, dialed: Dialed, record: ConnectionRecord) -> None:
        self.dialed = dialed
        self.destination = dialed.destination
        self.record = record
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HTTP_MAX_HEAD)
        self.responded = False  # a response head arrived for the current request
        self.requests = 0  # requests sent on this connection, the current one included

    def failed(self, problem: str, http_status: int = 502) -> UpstreamFailed:
        """The error for a broken origin connection; stale if it died before answering a
        request that was not its first (the origin closed it while it sat idle)."""
        stale = self.requests > 1 and not self.responded
        return UpstreamFailed(f"{self.destination} {problem}", http_status, stale=stale)

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE

    async def send(self, event: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        data = self.conn.send(event)
        if not data:
            return
        stream = self.dialed.stream
        try:
            if isinstance(stream, trio.SocketStream):
                await _write_all(stream.socket.fileno(), data)
            else:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self.failed(f"closed the connection ({exc})") from None
        self.record.bytes_up += len(data)

    async def next_event(self, idle: float) -> Next:
        while True:
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
            if isinstance(event, h11.Response):
                self.responded = True
            if event is not h11.NEED_DATA:
                return event
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
        """One read from the origin; a real socket is read on its fd and the idle timeout
        scope is only entered when the read has to wait. Raises trio.TooSlowError."""
        stream = self.dialed.stream
        if not isinstance(stream, trio.SocketStream):
            with trio.fail_after(idle):
                return bytes(await stream.receive_some(HTTP_BODY_CHUNK))
        fd = stream.socket.fileno()
        try:
            return os.read(fd, HTTP_BODY_CHUNK)
        except BlockingIOError:
            pass
        with trio.fail_after(idle):
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    return os.read(fd, HTTP_BODY_CHUNK)
                except BlockingIOError:
                    continue

    async def close(self, outcome: str, ctx: ProxyContext) -> None:
        if self.record.outcome == "open":
            self.record.outcome = outcome
        ctx.recorder.finish(self.record)
        await close_stream(self.dialed.stream)  # a socket: at once, no checkpoint


async def _write_all(fd: int, data: bytes) -> None:
    """Write all of data to a non-blocking socket fd, waiting only when it would block."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
