"""Byte-level helpers for trio streams and trio sockets in tests: a connected loopback
TCP pair, a write of everything, a read of an exact size, a read to EOF, the pipes this
process holds, a port nothing listens on.

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
