"""splice_direction(), the one splice loop: until FIN, for an exact length, until quiet;
each failure on its side; the tail after bulk; TCP_NOTSENT_LOWAT raised then restored."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import termios

import pytest
import trio

from proxy64.defaults import SPLICE_NOTSENT_LOWAT
from proxy64.net import splice as splice_module
from proxy64.net.splice import SpliceBroken, SpliceEnd, Stall, splice_direction
from tests.helpers.fds import fd_table_full
from tests.helpers.requirements import require_root
from tests.helpers.streams import pipe_fds, receive_all, receive_exactly, tcp_pair

pytestmark = pytest.mark.skipif(not splice_module.HAVE_SPLICE, reason="os.splice is Linux-only")

MiB = 1024 * 1024


def lowat(stream: trio.SocketStream) -> int:
    return int(stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))


class Counts:
    def __init__(self) -> None:
        self.read = self.written = 0

    def on_read(self, n: int) -> None:
        assert n > 0
        self.read += n

    def on_written(self, n: int) -> None:
        assert n > 0
        self.written += n


async def test_until_fin_sha256_and_lowat_raised_then_restored() -> None:
    """16 MiB + an odd tail, sent in odd pieces, then FIN: every byte, EOF, lowat back."""
    blob = os.urandom(16 * MiB + 4321)
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    counts = Counts()
    seen_lowat: list[int] = []
    before = lowat(dst)

    def on_written(n: int) -> None:
        counts.on_written(n)
        seen_lowat.append(lowat(dst))

    got: dict[str, object] = {}

    async def send() -> None:
        view = memoryview(blob)
        for offset in range(0, len(blob), 99_999):
            await writer.send_all(view[offset : offset + 99_999])
        await writer.send_eof()

    async def splice() -> None:
        got["end"] = await splice_direction(
            src.socket, dst.socket, on_read=counts.on_read, on_written=on_written
        )
        dst.socket.shutdown(socket.SHUT_WR)

    async def receive() -> None:
        got["data"] = await receive_all(reader)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(splice)
            nursery.start_soon(receive)
    assert got["end"] is SpliceEnd.EOF
    assert isinstance(got["data"], bytes)
    assert hashlib.sha256(got["data"]).digest() == hashlib.sha256(blob).digest()
    assert counts.read == counts.written == len(blob)
    assert before == 2**14  # trio's SocketStream default
    assert set(seen_lowat) == {SPLICE_NOTSENT_LOWAT}
    assert lowat(dst) == before
    for stream in (writer, src, dst, reader):
        await stream.aclose()


async def test_exact_length_reads_not_a_byte_past_it() -> None:
    """length N: DONE after N bytes; what follows stays in src's kernel buffer."""
    body, after = os.urandom(3 * MiB + 17), b"GET /next HTTP/1.1\r\n\r\n"
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    counts = Counts()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send_all, body + after)
            end = await splice_direction(
                src.socket,
                dst.socket,
                on_read=counts.on_read,
                on_written=counts.on_written,
                length=len(body),
            )
            assert end is SpliceEnd.DONE
            assert await receive_exactly(reader, len(body)) == body
            assert await receive_exactly(src, len(after)) == after
    assert counts.read == counts.written == len(body)
    for stream in (writer, src, dst, reader):
        await stream.aclose()


async def test_fin_before_length_is_closed_at_source() -> None:
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()

    async def send_then_eof() -> None:
        await writer.send_all(os.urandom(MiB))
        await writer.send_eof()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_eof)
            nursery.start_soon(receive_all, reader)
            with pytest.raises(SpliceBroken) as caught:
                await splice_direction(
                    src.socket, dst.socket, on_written=lambda n: None, length=2 * MiB
                )
            await dst.aclose()
    assert caught.value.cause is Stall.CLOSED
    assert caught.value.at_source
    assert isinstance(caught.value, trio.BrokenResourceError)  # what the relay catches
    for stream in (writer, src, reader):
        await stream.aclose()


async def test_silent_source_outlasts_stall_after() -> None:
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    with trio.fail_after(10):
        await writer.send_all(b"x" * 1000)
        with pytest.raises(SpliceBroken) as caught:
            await splice_direction(
                src.socket, dst.socket, on_written=lambda n: None, length=MiB, stall_after=0.2
            )
        assert await receive_exactly(reader, 1000) == b"x" * 1000  # delivered before waiting
    assert (caught.value.cause, caught.value.at_source) == (Stall.SILENT, True)
    for stream in (writer, src, dst, reader):
        await stream.aclose()


async def test_destination_that_takes_nothing_outlasts_stall_after() -> None:
    """The reader never reads: the kernel buffers fill, then the wait on dst times out."""
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    size = 128 * MiB
    chunk = bytes(MiB)

    async def send() -> None:
        for _ in range(size // MiB):
            await writer.send_all(chunk)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with pytest.raises(SpliceBroken) as caught:
                await splice_direction(
                    src.socket, dst.socket, on_written=lambda n: None, length=size, stall_after=0.3
                )
            nursery.cancel_scope.cancel()
    assert (caught.value.cause, caught.value.at_source) == (Stall.SILENT, False)
    for stream in (writer, src, dst, reader):
        await stream.aclose()


async def test_reset_destination_is_broken_at_destination() -> None:
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    reader.socket.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    await reader.aclose()  # linger 0: RST
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send_all, bytes(4 * MiB))
            with pytest.raises(SpliceBroken) as caught:
                await splice_direction(src.socket, dst.socket, on_written=lambda n: None)
            nursery.cancel_scope.cancel()
    assert (caught.value.cause, caught.value.at_source) == (Stall.BROKEN, False)
    assert caught.value.reason in {"ECONNRESET", "EPIPE"}
    for stream in (writer, src, dst):
        await stream.aclose()


QUIET = 2.0  # long enough that a loaded CI machine cannot fall silent between bulk and tail


async def test_small_tail_after_bulk_arrives_without_fin_then_quiet_releases_pipe() -> None:
    """A 7-byte tail after 8 MiB reaches the reader while the connection stays open (no
    low-water mark holds it back); then silence returns QUIET with the pipe closed and
    dst's TCP_NOTSENT_LOWAT back to trio's value."""
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    pipes_before = pipe_fds()
    bulk, tail = os.urandom(8 * MiB), b"tail!\r\n"
    ends: list[SpliceEnd] = []

    async def splice() -> None:
        ends.append(
            await splice_direction(
                src.socket, dst.socket, on_written=lambda n: None, quiet_after=QUIET
            )
        )

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(splice)
            sent = trio.Event()

            async def send_bulk() -> None:
                await writer.send_all(bulk)
                sent.set()

            nursery.start_soon(send_bulk)
            assert await receive_exactly(reader, len(bulk)) == bulk
            await sent.wait()  # one sender at a time on the stream
            await writer.send_all(tail)
            with trio.fail_after(QUIET - 0.5):  # sooner than quiet_after: not waiting for silence
                assert await receive_exactly(reader, len(tail)) == tail
            assert pipe_fds() == pipes_before + 2  # still splicing, pipe held
    assert ends == [SpliceEnd.QUIET]
    assert pipe_fds() == pipes_before
    assert lowat(dst) == 2**14
    for stream in (writer, src, dst, reader):
        await stream.aclose()


SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # linux/socket.h; past wmem_max/rmem_max (root)


async def test_one_splice_in_takes_what_the_pipe_has_room_for() -> None:
    """With more queued at src than the pipe holds, the first read from src fills the
    whole pipe in one splice(2), and the next reads take what the drain made room for."""
    require_root()  # SO_RCVBUFFORCE: 2 MiB must wait in src's receive queue
    probe = splice_module.Pipe()
    room = probe.size
    probe.close()
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    src.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * MiB)
    writer.socket.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 * MiB)
    blob = os.urandom(max(2 * MiB, 2 * room))
    reads: list[int] = []
    with trio.fail_after(20):
        await writer.send_all(blob)
        # no event says "the kernel queued N bytes": look again until it has
        while queued(src) < len(blob):  # noqa: ASYNC110
            await trio.sleep(0.01)
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def receive() -> None:
                got.append(await receive_exactly(reader, len(blob)))

            nursery.start_soon(receive)
            end = await splice_direction(
                src.socket,
                dst.socket,
                on_read=reads.append,
                on_written=lambda n: None,
                length=len(blob),
            )
    assert end is SpliceEnd.DONE
    assert got == [blob]
    assert reads[0] == room, reads[:8]
    assert sum(reads) == len(blob)
    for stream in (writer, src, dst, reader):
        await stream.aclose()


def queued(stream: trio.SocketStream) -> int:
    """Bytes in the socket's receive queue (SIOCINQ)."""
    raw = fcntl.ioctl(stream.socket.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


async def test_no_pipe_with_the_fd_table_full_reads_nothing_and_touches_nothing() -> None:
    """Out of fds, splice_direction says NO_PIPE at once: not a byte is taken from src (the
    caller copies it all) and dst's TCP_NOTSENT_LOWAT is left as it was."""
    writer, src = await tcp_pair()
    dst, reader = await tcp_pair()
    await writer.send_all(b"still here")
    await trio.lowlevel.wait_readable(src.socket.fileno())
    counts, before = Counts(), lowat(dst)
    with trio.fail_after(5), fd_table_full():
        end = await splice_direction(
            src.socket, dst.socket, on_read=counts.on_read, on_written=counts.on_written
        )
    assert end is SpliceEnd.NO_PIPE
    assert counts.read == counts.written == 0 and lowat(dst) == before
    assert await receive_exactly(src, 10) == b"still here"
    for stream in (writer, src, dst, reader):
        await stream.aclose()
