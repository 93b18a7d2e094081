"""tests/helpers/streams.receive_head, the tests' one read to the end of an HTTP head
(RFC 9112 §2.1): a head split over reads, what came after it kept (or left in the stream
with most=1), an EOF before its end, the size bound; over a trio stream and a trio socket.

Each read of a scripted stream gets the next piece, so the split points are the test's,
not the scheduler's."""

from __future__ import annotations

import itertools
import socket

import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from tests.helpers.streams import HEAD_END, HEAD_LIMIT, receive_head

HEAD = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"
NEXT = b"GET http://a.test/next HTTP/1.1\r\nHost: a.test\r\n\r\n"


def scripted(pieces: list[bytes], *, close: bool) -> trio.testing.MemoryReceiveStream:
    """A stream whose every receive_some gets the next piece; after the last, EOF when
    close, else a wait for more."""
    stream = trio.testing.MemoryReceiveStream()
    waiting = list(pieces)

    async def next_piece() -> None:
        if waiting:
            stream.put_data(waiting.pop(0))
        elif close:
            stream.put_eof()

    stream.receive_some_hook = next_piece
    return stream


async def head_from_pieces(
    pieces: list[bytes],
    *,
    close: bool = False,
    limit: int = HEAD_LIMIT,
    short_ok: bool = False,
) -> bytes:
    with trio.fail_after(5):
        return await receive_head(scripted(pieces, close=close), limit=limit, short_ok=short_ok)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p for p in points if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=12))
@example(NEXT, [len(HEAD) - 1])  # the empty line split "\r\n\r" | "\n"
@example(NEXT, [len(HEAD) - 3, len(HEAD) - 2, len(HEAD) - 1])
@example(b"", [len(HEAD)])
async def test_a_head_split_over_reads_ends_with_the_read_that_ends_it(
    rest: bytes, points: list[int]
) -> None:
    pieces = cut(HEAD + rest, points)
    got = await head_from_pieces(pieces)
    reads = 1 + next(i for i in range(len(pieces)) if len(b"".join(pieces[: i + 1])) >= len(HEAD))
    assert got == b"".join(pieces[:reads])
    assert got.startswith(HEAD) and got.index(HEAD_END) == len(HEAD) - len(HEAD_END)


async def test_bytes_after_the_head_in_the_same_read_are_returned() -> None:
    assert await head_from_pieces([HEAD + NEXT[:10]]) == HEAD + NEXT[:10]


async def test_a_buffered_head_is_returned_without_a_read() -> None:
    """A keep-alive reader hands back what follows the previous head; a whole head there
    needs no read (the stream here is closed: a read would see EOF)."""
    closed = scripted([], close=True)
    assert await receive_head(closed, buffered=NEXT + b"x") == NEXT + b"x"


async def test_a_buffered_part_of_a_head_is_completed_by_reads() -> None:
    stream = scripted([HEAD[10:15], HEAD[15:] + b"x"], close=True)
    assert await receive_head(stream, buffered=HEAD[:10]) == HEAD + b"x"


async def test_most_1_leaves_the_bytes_after_the_head_in_the_stream() -> None:
    sending, receiving = trio.testing.memory_stream_one_way_pair()
    await sending.send_all(HEAD + b"tunnel bytes")
    assert await receive_head(receiving, most=1) == HEAD
    assert await receiving.receive_some() == b"tunnel bytes"  # all in one read before


async def test_eof_before_the_end_of_a_head_fails_the_test() -> None:
    with pytest.raises(AssertionError, match="EOF before a head's end, after 10 bytes"):
        await head_from_pieces([HEAD[:4], HEAD[4:10]], close=True)


@pytest.mark.parametrize("sent", [[], [HEAD[:4], HEAD[4:10]], [HEAD[:-1]]])
async def test_eof_before_the_end_of_a_head_with_short_ok_returns_what_came(
    sent: list[bytes],
) -> None:
    got = await head_from_pieces(sent, close=True, short_ok=True)
    assert got == b"".join(sent) and HEAD_END not in got


async def test_a_head_of_exactly_the_limit_is_read() -> None:
    assert await head_from_pieces([HEAD[:20], HEAD[20:]], limit=len(HEAD)) == HEAD


@pytest.mark.parametrize(
    ("pieces", "said"),
    [
        ([HEAD], f"a head of {len(HEAD)} bytes, over {len(HEAD) - 1}"),
        # the limit reached without the empty line: no read for the last byte
        ([HEAD[:20], HEAD[20:-1], HEAD[-1:]], f"no end of head in {len(HEAD) - 1} bytes"),
    ],
)
async def test_a_head_over_the_limit_fails_the_test(pieces: list[bytes], said: str) -> None:
    with pytest.raises(AssertionError, match=said):
        await head_from_pieces(pieces, limit=len(HEAD) - 1)


async def test_no_end_within_the_default_limit_fails_without_waiting_for_more() -> None:
    """64 KiB without an empty line fails at once, the stream still open."""
    fields = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    too_long = b"GET / HTTP/1.1\r\n" + fields * (HEAD_LIMIT // len(fields) + 1)
    with pytest.raises(AssertionError, match="no end of head in"):
        await head_from_pieces([too_long[:30_000], too_long[30_000:]])


async def test_a_trio_socket_is_read_the_same_way() -> None:
    """recv() in place of receive_some(): pieces sent once the reader waits, so each is one
    read; then an EOF before a head fails the test."""
    ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:

        async def write() -> None:
            for piece in (HEAD[:7], HEAD[7:-2], HEAD[-2:] + b"after"):
                await trio.testing.wait_all_tasks_blocked()
                await theirs.send(piece)
            theirs.shutdown(socket.SHUT_WR)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                got = await receive_head(ours)
            assert got == HEAD + b"after"
            with pytest.raises(AssertionError, match="EOF before a head's end, after 0 bytes"):
                await receive_head(ours)
