"""Byte-level helpers for trio streams and trio sockets in tests: a connected loopback
TCP pair, a write of everything, a read of an exact size, a read to the end of an HTTP
head, a read to EOF, the pipes this process holds, a port nothing listens on.

Each read and write takes either a trio stream (receive_some) or a trio socket (recv), so a test
that must stay at the socket level (no SocketStream set-up on the client side) reads the
same way as one that uses streams.
"""

from __future__ import annotations

import os
import socket

import trio

Readable = trio.abc.ReceiveStream | trio.abc.SendStream | trio.socket.SocketType
CHUNK = 1 << 20
# RFC 9112 §2.1: a head is the start line and the field lines, each ending in CRLF, then
# an empty line; whatever follows it is the body, the tunnel or the next request.
HEAD_END = b"\r\n\r\n"
HEAD_LIMIT = 1 << 16


async def _receive(source: Readable, most: int) -> bytes:
    if isinstance(source, trio.abc.ReceiveStream):
        return bytes(await source.receive_some(most))
    assert isinstance(source, trio.socket.SocketType), source
    return await source.recv(most)


async def send_all(sink: Readable, data: bytes) -> None:
    """All of data, to a trio stream or a trio socket."""
    if isinstance(sink, trio.abc.SendStream):
        await sink.send_all(data)
        return
    assert isinstance(sink, trio.socket.SocketType), sink
    view = memoryview(data)
    while view:
        view = view[await sink.send(view) :]


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(client side, server side) of one TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with listeners[0]:
        outside = await trio.open_tcp_stream("127.0.0.1", port)
        inside = await listeners[0].accept()
    return outside, inside


async def receive_exactly(source: Readable, size: int, *, short_ok: bool = False) -> bytes:
    """`size` bytes; an EOF before them fails the test, or with short_ok returns what came
    (for a peer expected to close early)."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = await _receive(source, min(size - got, CHUNK))
        if not chunk:
            assert short_ok, f"EOF after {got} of {size} bytes: {b''.join(chunks)[:64]!r}"
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


async def receive_head(
    source: Readable,
    *,
    buffered: bytes = b"",
    most: int = HEAD_LIMIT,
    limit: int = HEAD_LIMIT,
    short_ok: bool = False,
) -> bytes:
    """What `buffered` (bytes an earlier read left over) and reads of at most `most` bytes
    hold once they hold the empty line that ends an HTTP head: the head and anything that
    came after it in the same reads. `most=1` reads no byte past the head, for a caller
    that leaves the rest in the stream. A head longer than `limit` bytes (its empty line
    included) fails the test; so does an EOF before its end, or with short_ok that returns
    what came (b"" or part of a head: HEAD_END not in it)."""
    data = buffered
    searched = 0
    while True:
        end = data.find(HEAD_END, searched)
        if end >= 0:
            size = end + len(HEAD_END)
            assert size <= limit, f"a head of {size} bytes, over {limit}: {data[:64]!r}"
            return data
        assert len(data) < limit, f"no end of head in {len(data)} bytes: {data[:64]!r}"
        searched = max(0, len(data) - len(HEAD_END) + 1)
        chunk = await _receive(source, most)
        if not chunk:
            assert short_ok, f"EOF before a head's end, after {len(data)} bytes: {data[:64]!r}"
            return data
        data += chunk


async def receive_all(source: Readable) -> bytes:
    """Everything until EOF."""
    chunks = []
    while chunk := await _receive(source, CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def pipe_fds() -> int:
    """How many pipe ends this process holds (splice(2) pipes among them)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("pipe:"):
                count += 1
        except OSError:
            pass
    return count


def closed_port(host: str = "127.0.0.1") -> int:
    """A TCP port on host that nothing listens on (bound, then closed): a connect there is
    refused, unless another process takes the port in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
