"""http_upstream.move_body(): a body of known length (RFC 9112 §6.3 rule 6) moved exactly,
on real sockets (the shared splice loop) and on memory streams (the copy loop), and each
way it can be cut, with the message http_server turns into a 502/504 or a closed client."""

from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
import trio
import trio.testing

from proxy64.defaults import HTTP_SPLICE_BODY_MIN
from proxy64.net.http_upstream import BodyCut, move_body
from tests.helpers.fds import fd_table_full
from tests.helpers.streams import receive_exactly, tcp_pair

MiB = 1024 * 1024


class Counted:
    def __init__(self) -> None:
        self.read = self.written = 0

    def on_read(self, n: int) -> None:
        self.read += n

    def on_written(self, n: int) -> None:
        self.written += n


@pytest.mark.parametrize("size", [HTTP_SPLICE_BODY_MIN, 5 * MiB + 3])
@pytest.mark.parametrize("fds_full", [False, True], ids=["", "fd-table-full"])
async def test_rfc9112_6_3_exact_body_on_sockets_next_request_left_unread(
    size: int, fds_full: bool
) -> None:
    """prefix (a head) + first (already received) + the rest: all of it, in order, and
    the pipelined request after the body is still in the source socket. With the fd table
    full there is no pipe for the splice loop: the body is copied instead, as exactly."""
    head, first = b"HTTP/1.1 200 OK\r\nContent-Length: N\r\n\r\n", os.urandom(1000)
    rest, after = os.urandom(size), b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    counted = Counted()
    got = b""

    async def read_body() -> None:
        nonlocal got
        got = await receive_exactly(reader, len(head) + len(first) + size)

    full = fd_table_full() if fds_full else contextlib.nullcontext()
    with trio.fail_after(30), full:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send_all, rest + after)
            nursery.start_soon(read_body)
            await move_body(
                src,
                dst,
                first,
                len(first) + size,
                prefix=head,
                idle=5.0,
                counted_read=counted.on_read,
                counted_written=counted.on_written,
            )
            assert await receive_exactly(src, len(after)) == after
    expected = head + first + rest
    assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()
    assert counted.read == size  # `first` was counted when it arrived
    assert counted.written == len(expected)
    for stream in (writer, src, dst, reader):
        await stream.aclose()


async def test_exact_body_on_memory_streams() -> None:
    body = os.urandom(3 * MiB + 11)
    app_src, src = trio.testing.memory_stream_pair()
    dst, app_dst = trio.testing.memory_stream_pair()
    counted = Counted()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app_src.send_all, body + b"NEXT")
            nursery.start_soon(
                lambda: move_body(
                    src,
                    dst,
                    b"",
                    len(body),
                    idle=5.0,
                    counted_read=counted.on_read,
                    counted_written=counted.on_written,
                )
            )
            assert await receive_exactly(app_dst, len(body)) == body
    assert counted.read == counted.written == len(body)


async def cut(
    size: int, send: bytes, *, eof: bool, reader_reads: bool, idle: float = 0.3
) -> BodyCut:
    """Run move_body for `size` bytes while the sender sends `send` (then FIN if eof) and
    the reader reads or not; return the BodyCut it raised."""
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()

    async def sender() -> None:
        await writer.send_all(send)
        if eof:
            await writer.send_eof()

    async def drain() -> None:
        while await reader.receive_some(MiB):
            pass

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            if reader_reads:
                nursery.start_soon(drain)
            with pytest.raises(BodyCut) as caught:
                await move_body(
                    src,
                    dst,
                    b"",
                    size,
                    idle=idle,
                    counted_read=lambda n: None,
                    counted_written=lambda n: None,
                )
            nursery.cancel_scope.cancel()
    for stream in (writer, src, dst, reader):
        await stream.aclose()
    return caught.value


async def test_short_body_then_fin_is_cut_while_reading() -> None:
    exc = await cut(4 * MiB, os.urandom(MiB), eof=True, reader_reads=True)
    assert exc.reading
    assert str(exc) == "closed the connection in the middle of the body"


async def test_silent_sender_is_cut_after_idle() -> None:
    exc = await cut(4 * MiB, os.urandom(MiB), eof=False, reader_reads=True, idle=0.2)
    assert exc.reading
    assert str(exc) == "sent nothing for 0.2 s"


async def test_receiver_taking_nothing_is_cut_after_idle() -> None:
    exc = await cut(128 * MiB, bytes(128 * MiB), eof=False, reader_reads=False)
    assert not exc.reading
    assert str(exc) == "took nothing for 0.3 s"
