"""A FIFO of bytes kept as chunks: the TUN TCP flow's send and receive buffers.

Why not a bytearray: deleting from the front of a bytearray and then appending makes
CPython copy the whole buffer into a new allocation (a resize with a logical offset), so
a 1 MiB window cost a fresh ~1 MiB allocation and copy per 64 KiB segment. Here an append
keeps the caller's bytes object, or its read-only memoryview (a segment's payload as a
view into the packet read from the TUN: no copy either), reading a whole chunk or a part
of one returns it as is (a view for a part), and consuming the front drops chunks or
moves an offset into the first one.

Invariants: len(self) == sum of the chunks' lengths - self._head; no chunk is empty;
_head < len(first chunk). Small appends are merged into a small last chunk (each side
under MERGE_BELOW), so many tiny writes cannot make thousands of chunks: every chunk but
the last is at least MERGE_BELOW long or followed by one that is. Pure: no I/O.
"""

from __future__ import annotations

from collections import deque

Chunk = bytes | memoryview  # a memoryview kept here is read-only, 1-D, of bytes

MERGE_BELOW = 2048  # bytes; a merge copies at most 2 * MERGE_BELOW


class ByteQueue:
    __slots__ = ("_chunks", "_head", "_len")

    def __init__(self) -> None:
        self._chunks: deque[Chunk] = deque()
        self._head = 0  # bytes of the first chunk already consumed
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue data at the end (a mutable buffer is copied; bytes and read-only byte
        views are kept as is: the caller must not change what such a view shows)."""
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if not size:
            return
        chunk: Chunk
        if type(data) is bytes:
            chunk = data
        elif isinstance(data, memoryview) and data.readonly and data.format == "B":
            chunk = data  # immutable underneath (bytes): safe to keep, no copy
        else:
            chunk = bytes(data)
        chunks = self._chunks
        if chunks and size < MERGE_BELOW and len(chunks[-1]) < MERGE_BELOW:
            last = chunks.pop()
            if len(chunks) == 0 and self._head:  # the first chunk: merge what is unread
                last = last[self._head :]
                self._head = 0
            chunk = b"".join((last, chunk))
        chunks.append(chunk)
        self._len += size

    def peek(self, offset: int, n: int) -> Chunk:
        """Up to n bytes starting offset bytes from the front, without consuming them: a
        stored chunk or a view into one when they lie in one chunk (no copy), else joined."""
        if offset < 0 or n < 0:
            raise ValueError(f"peek({offset}, {n}): offset and size must not be negative")
        n = min(n, self._len - offset)
        if n <= 0:
            return b""
        last = self._chunks[-1]
        # where the last chunk starts, counted from the front (-_head when it is the first)
        in_last = offset - (self._len - len(last))
        if in_last >= 0:  # the common case in bulk: the newest chunk, found without a scan
            if in_last == 0 and n == len(last):
                return last
            return memoryview(last)[in_last : in_last + n]
        position = offset + self._head
        parts: list[bytes | memoryview] = []  # views: the only copy is the final join
        for chunk in self._chunks:
            if position >= len(chunk):
                position -= len(chunk)
                continue
            if position == 0 and len(chunk) <= n:
                parts.append(chunk)  # a whole chunk
            else:
                parts.append(memoryview(chunk)[position : position + n])
            n -= len(parts[-1])
            position = 0
            if n == 0:
                break
        if len(parts) == 1:
            return parts[0]  # within one chunk: no copy at all
        return b"".join(parts)

    def drop(self, n: int) -> None:
        """Consume up to n bytes from the front."""
        n = min(max(n, 0), self._len)
        self._len -= n
        chunks = self._chunks
        while n:
            rest = len(chunks[0]) - self._head
            if n < rest:
                self._head += n
                return
            chunks.popleft()
            self._head = 0
            n -= rest

    def take(self, n: int) -> Chunk:
        """Consume and return up to n bytes from the front."""
        data = self.peek(0, n)
        self.drop(len(data))
        return data
