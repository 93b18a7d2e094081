"""Resets pass through (RFC 9293 §3.10.4 ABORT): an origin's RST in the middle of a
SOCKS5 or HTTP CONNECT tunnel, or of a forwarded HTTP response body, reaches the client
as ECONNRESET (never a clean FIN after the bytes so far), and a client's RST reaches the
origin; the log line says who reset. `proxy64 serve` runs as a subprocess.
"""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from tests.helpers.origins import pattern_bytes
from tests.helpers.serve_e2e import (
    serve_a_only_dns,
    serve_embedded,
    socks5,
    wait_log,
)
from tests.helpers.socks5_client import connect_request
from tests.helpers.streams import receive_exactly, receive_head

LINGER_ABORT = struct.pack("ii", 1, 0)


def rst_close(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
    stream.socket.close()


async def serve_then_reset(
    head: bytes,
    size: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """An origin on 127.0.0.1 that reads the request (up to a blank line, when head is
    given), sends head + size pattern bytes, waits until they are acknowledged, then
    resets (SO_LINGER 0)."""

    async def handle(stream: trio.SocketStream) -> None:
        if head:
            await receive_head(stream)
        await stream.send_all(head + pattern_bytes(size))
        # let the bytes leave the origin's send queue: a reset discards unsent data
        for _ in range(200):
            if _unsent(stream.socket) == 0:
                break
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        rst_close(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def _unsent(sock: trio.socket.SocketType) -> int:
    siocoutq = 0x5411  # TIOCOUTQ: bytes not yet acknowledged (tcp(7))
    import fcntl

    buf = fcntl.ioctl(sock.fileno(), siocoutq, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


async def read_until_error(stream: trio.SocketStream) -> tuple[int, BaseException | None]:
    """Bytes read until EOF or an error; the error (None for a clean EOF)."""
    got = 0
    try:
        while chunk := await stream.receive_some(1 << 16):
            got += len(chunk)
    except trio.BrokenResourceError as exc:
        return got, exc.__cause__
    return got, None


@pytest.mark.parametrize("size", [20_000, 3 * 1024 * 1024])  # relay hub; splice(2)
async def test_socks5_origin_reset_reaches_client(nursery: trio.Nursery, size: int) -> None:
    origin = await nursery.start(serve_then_reset, b"", size)
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(20):
        stream, reply = await socks5(proxy, connect_request("127.0.0.1", origin))
        assert reply[1] == 0
        got, error = await read_until_error(stream)
        assert isinstance(error, ConnectionResetError), (got, error)
        assert got <= size
        await wait_log(proxy, "origin reset the connection")


@pytest.mark.parametrize("size", [20_000, 3 * 1024 * 1024])
async def test_connect_origin_reset_reaches_client(nursery: trio.Nursery, size: int) -> None:
    origin = await nursery.start(serve_then_reset, b"", size)
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(20):
        assert proxy.http is not None
        stream = await trio.open_tcp_stream(*proxy.http)
        authority = f"127.0.0.1:{origin}"
        await stream.send_all(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = await receive_head(stream, most=1)  # the tunnel's bytes stay for read_until_error
        assert head.startswith(b"HTTP/1.1 200"), head
        got, error = await read_until_error(stream)
        assert isinstance(error, ConnectionResetError), (got, error)
        await wait_log(proxy, "origin reset the connection")


async def test_http_forwarding_cut_body_resets_client(nursery: trio.Nursery) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"
    origin = await nursery.start(serve_then_reset, head, 65_536)
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(20):
        assert proxy.http is not None
        stream = await trio.open_tcp_stream(*proxy.http)
        await stream.send_all(
            f"GET http://127.0.0.1:{origin}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        got, error = await read_until_error(stream)
        assert isinstance(error, ConnectionResetError), (got, error)
        assert got < len(head) + 1048576


async def test_socks5_client_reset_reaches_origin(nursery: trio.Nursery) -> None:
    seen: list[BaseException | None] = []
    done = trio.Event()

    async def origin_handler(stream: trio.SocketStream) -> None:
        await stream.send_all(b"ready")
        _, error = await read_until_error(stream)
        seen.append(error)
        done.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    origin = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, origin_handler, listeners)
    dns_port = await nursery.start(serve_a_only_dns)
    with serve_embedded(dns_port) as proxy, trio.fail_after(20):
        stream, reply = await socks5(proxy, connect_request("127.0.0.1", origin))
        assert reply[1] == 0
        assert await receive_exactly(stream, 5) == b"ready"
        await stream.send_all(b"some bytes")
        await trio.sleep(0.1)
        rst_close(stream)
        await done.wait()
        assert isinstance(seen[0], ConnectionResetError), seen
        await wait_log(proxy, "client reset the connection")
