"""A minimal SOCKS5 splice relay: the reference target of the bulk benchmark.

It shows, in the same run as proxy64, what a trio relay with splice(2) reaches on this
machine, so the bulk goal (≥ 0.7× direct) is measured against something a relay can do.
Deliberately minimal: SOCKS5 (RFC 1928) with no authentication, CONNECT to an IPv4 or
IPv6 literal only, no resolver, no limits, no idle timeout, no logging. Each direction is
one task: wait until src is readable, splice src → pipe (1 MiB), splice the pipe out to
dst (waiting while dst is full), FIN → shutdown(SHUT_WR). Never SPLICE_F_MORE.

    python bench/reference_relay.py --listen 127.0.0.1 --port 1080

Not part of the product: the benchmark starts it (bench/peers.py, server `reference`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Awaitable, Callable

import trio

PIPE_SIZE = 1024 * 1024
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


async def read_exactly(sock: trio.socket.SocketType, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await sock.recv(size - len(data))
        if not chunk:
            raise EOFError("closed during the handshake")
        data += chunk
    return data


async def direction(src: trio.socket.SocketType, dst: trio.socket.SocketType) -> None:
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE)
    src_fd, dst_fd = src.fileno(), dst.fileno()
    try:
        while True:
            await trio.lowlevel.wait_readable(src_fd)
            try:
                held = os.splice(src_fd, wfd, PIPE_SIZE, flags=FLAGS)
            except BlockingIOError:
                continue
            if held == 0:
                dst.shutdown(socket.SHUT_WR)
                return
            while held:
                try:
                    held -= os.splice(rfd, dst_fd, held, flags=FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst_fd)
    except OSError:
        with contextlib.suppress(OSError):
            src.shutdown(socket.SHUT_RDWR)
            dst.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(rfd)
        os.close(wfd)


async def handle(client: trio.socket.SocketType) -> None:
    remote = None
    try:
        greeting = await read_exactly(client, 2)
        await read_exactly(client, greeting[1])
        await client.send(b"\x05\x00")
        _ver, _cmd, _rsv, atyp = await read_exactly(client, 4)
        if atyp not in (1, 4):
            await client.send(b"\x05\x08\x00\x01" + bytes(6))  # literals only
            return
        packed = await read_exactly(client, 4 if atyp == 1 else 16)
        (port,) = struct.unpack("!H", await read_exactly(client, 2))
        address = str(ipaddress.ip_address(packed))
        family = socket.AF_INET if atyp == 1 else socket.AF_INET6
        remote = trio.socket.socket(family, socket.SOCK_STREAM)
        remote.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await remote.connect((address, port))
        except OSError:
            await client.send(b"\x05\x05\x00\x01" + bytes(6))
            return
        await client.send(b"\x05\x00\x00\x01" + bytes(6))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(direction, client, remote)
            nursery.start_soon(direction, remote, client)
    except (OSError, EOFError):
        pass
    finally:
        client.close()
        if remote is not None:
            remote.close()


Handler = Callable[[trio.socket.SocketType], Awaitable[None]]


async def serve(host: str, port: int, handler: Handler) -> None:
    """Accept on host:port until interrupted, one task per client (TCP_NODELAY)."""
    listener = trio.socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
    )
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((host, port))
    listener.listen(1024)
    async with trio.open_nursery() as nursery:
        while True:
            client, _addr = await listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(handler, client)


def main(description: str, handler: Handler) -> None:
    """--listen HOST --port PORT, then serve() with handler (a reference's command line)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.listen, args.port, handler)


if __name__ == "__main__":
    main(__doc__.split("\n", 1)[0], handle)
