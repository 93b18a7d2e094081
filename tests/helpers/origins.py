"""Small loopback origins for front-end tests, each started with `await nursery.start(...)`
which returns the bound port. They serve until the nursery is cancelled.

- serve_tcp_echo: echoes bytes; after the client's EOF it finishes and closes (half-close).
- serve_tcp_hash: reads until EOF, then answers sha256(upload) followed by `download`
  deterministic bytes (pattern_bytes), so a test checks both directions of a half-closed
  tunnel.
- serve_http_hello: a minimal HTTP/1.1 origin for curl: 200 with "hello <path>\\n".
- serve_udp_echo: echoes each datagram to its sender.
- backlogged(): a listener on ::1 whose accept queue is full, so a connect to it stays in
  flight (EINPROGRESS) until serve_echo() accepts: the premise of a dial the hub waits for.
"""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import trio

from tests.helpers.streams import HEAD_END, receive_head


def pattern_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


async def _serve(
    handler: object,
    host: str,
    task_status: trio.TaskStatus[int],
) -> None:
    listeners = await trio.open_tcp_listeners(0, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)  # type: ignore[arg-type]


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass


async def serve_tcp_echo(
    host: str = "127.0.0.1", *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await _serve(_echo, host, task_status)


async def _hash(stream: trio.SocketStream, download: int) -> None:
    async with stream:
        digest = hashlib.sha256()
        try:
            while data := await stream.receive_some(65536):
                digest.update(data)
            await stream.send_all(digest.digest() + pattern_bytes(download))
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass


async def serve_tcp_hash(
    host: str = "127.0.0.1",
    download: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    await _serve(partial(_hash, download=download), host, task_status)


async def _http(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            head = await receive_head(stream, short_ok=True)
            if HEAD_END not in head:
                return
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            body = b"hello " + path + b"\n"
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
        except trio.BrokenResourceError:
            pass


async def serve_http_hello(
    host: str = "127.0.0.1", *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await _serve(_http, host, task_status)


async def serve_udp_echo(
    host: str = "127.0.0.1", *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind((host, 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, address = await sock.recvfrom(65535)
            await sock.sendto(data, address)


class Backlogged:
    """A listener on ::1 whose accept queue is full until make_room()."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.listener.bind(("::1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("::1", self.port))  # fills the queue

    async def serve_echo(self) -> None:
        """Accept (the filler first: closed) and echo on the next connection until EOF."""
        listener = trio.socket.from_stdlib_socket(self.listener)
        filler, _ = await listener.accept()
        filler.close()
        conn, _ = await listener.accept()
        with conn:
            while data := await conn.recv(65536):
                await conn.send(data)

    async def serve_http_once(self, body: bytes) -> None:
        """Accept (the filler first: closed), read one request head on the next
        connection, answer it with body (Content-Length) and close."""
        listener = trio.socket.from_stdlib_socket(self.listener)
        filler, _ = await listener.accept()
        filler.close()
        conn, _ = await listener.accept()
        with conn:
            await receive_head(conn, short_ok=True)
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


@contextmanager
def backlogged() -> Iterator[Backlogged]:
    origin = Backlogged()
    try:
        yield origin
    finally:
        origin.close()
