"""bench/reference_relay.py, the benchmark's reference target, must be a correct relay
(or its figures mean nothing): started the way bench/peers.py starts it, it carries 8 MiB
each way byte-exact with half-close, and refuses a domain name (literals only)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import trio

from bench import peers

MiB = 1024 * 1024


async def receive_all(stream: trio.SocketStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(MiB):
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


async def socks5(port: int, request: bytes) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x05\x01\x00")
    assert await receive_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(request)
    return stream, await receive_exactly(stream, 10)


async def test_sha256_both_ways_with_half_close_and_literals_only(tmp_path: Path) -> None:
    server = peers.make_server("reference", tmp_path)
    await trio.to_thread.run_sync(server.start)
    try:
        up, down = os.urandom(8 * MiB + 1), os.urandom(8 * MiB + 7)
        got: dict[str, bytes] = {}
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        origin_port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(30):
            async with listeners[0]:
                request = b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1])
                client, reply = await socks5(
                    server.ports["socks5"], request + struct.pack("!H", origin_port)
                )
                assert reply[:2] == b"\x05\x00"
                remote = await listeners[0].accept()

            async def at_origin() -> None:
                got["up"] = await receive_all(remote)  # the client's FIN arrives ...
                await remote.send_all(down)  # ... and the other direction still flows
                await remote.send_eof()

            async def at_client() -> None:
                await client.send_all(up)
                await client.send_eof()
                got["down"] = await receive_all(client)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(at_origin)
                nursery.start_soon(at_client)
            await client.aclose()
            await remote.aclose()

            name = b"example.org"
            refused, reply = await socks5(
                server.ports["socks5"],
                b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", 80),
            )
            assert reply[:2] == b"\x05\x08"  # RFC 1928 §6: address type not supported
            await refused.aclose()
        assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    finally:
        server.stop()
