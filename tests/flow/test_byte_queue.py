"""ByteQueue against a bytearray model: same bytes, same lengths, for any operation order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.flow.byte_queue import MERGE_BELOW, ByteQueue

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=5000), st.sampled_from(["b", "ba", "mv"])),
        st.tuples(st.just("peek"), st.integers(0, 12000), st.integers(0, 12000)),
        st.tuples(st.just("drop"), st.integers(0, 12000)),
        st.tuples(st.just("take"), st.integers(0, 12000)),
    ),
    max_size=60,
)


@given(operations)
def test_matches_a_bytearray(ops: list[tuple[object, ...]]) -> None:
    queue, model = ByteQueue(), bytearray()
    for op in ops:
        if op[0] == "append":
            data, form = op[1], op[2]
            assert isinstance(data, bytes) and isinstance(form, str)
            forms: dict[str, bytes | bytearray | memoryview] = {
                "b": data,
                "ba": bytearray(data),
                "mv": memoryview(data),
            }
            queue.append(forms[form])
            model += data
        elif op[0] == "peek":
            offset, n = op[1], op[2]
            assert isinstance(offset, int) and isinstance(n, int)
            got = queue.peek(offset, n)
            # bytes, or a read-only view within one chunk (no copy)
            assert type(got) is bytes or (isinstance(got, memoryview) and got.readonly)
            assert bytes(got) == bytes(model[offset : offset + n])
        elif op[0] == "drop":
            assert isinstance(op[1], int)
            queue.drop(op[1])
            del model[: op[1]]
        else:
            assert isinstance(op[1], int)
            assert bytes(queue.take(op[1])) == bytes(model[: op[1]])
            del model[: op[1]]
        assert len(queue) == len(model)
        assert bool(queue) == bool(model)
    assert bytes(queue.take(len(model) + 1)) == bytes(model)


def test_whole_chunks_are_returned_without_a_copy() -> None:
    queue = ByteQueue()
    block = b"x" * 65536
    queue.append(block)
    assert queue.peek(0, 65536) is block
    assert queue.take(1 << 20) is block
    assert not queue


def test_tiny_appends_are_merged_into_few_chunks() -> None:
    queue = ByteQueue()
    for _ in range(100_000):
        queue.append(b"a")
    # at most one chunk per MERGE_BELOW bytes (plus the last): bounded memory per byte
    assert len(queue._chunks) <= 100_000 // MERGE_BELOW + 1
    assert queue.take(200_000) == b"a" * 100_000


def test_negative_peek_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        ByteQueue().peek(-1, 3)


def test_read_only_views_are_kept_and_mutable_buffers_copied() -> None:
    """A payload viewed in the packet it arrived in is queued without a copy; a view of a
    bytearray is copied, so reusing that buffer cannot change queued bytes."""
    packet = bytes(range(200)) * 400
    view = memoryview(packet)[70:]
    scratch = bytearray(b"a" * 3000)
    q = ByteQueue()
    q.append(view)
    q.append(memoryview(scratch))
    scratch[:] = b"b" * 3000
    assert len(q) == len(view) + 3000
    whole = q.peek(0, len(view))
    assert isinstance(whole, memoryview) and whole.obj is packet  # the same memory
    part = q.peek(5, 100)
    assert isinstance(part, memoryview) and bytes(part) == packet[75:175]
    assert bytes(q.take(len(q))) == packet[70:] + b"a" * 3000


def test_small_views_merge_into_one_chunk() -> None:
    q = ByteQueue()
    for i in range(50):
        q.append(memoryview(bytes([i]) * 10))
    assert bytes(q.take(500)) == b"".join(bytes([i]) * 10 for i in range(50))
