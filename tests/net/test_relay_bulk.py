"""1 GiB each way at once through a real `proxy64 serve` SOCKS5 tunnel, with half-close.

Every 1 MiB block starts with its index, so a lost, repeated or reordered block changes
the sha256. Splice is on by default (SPLICE_THRESHOLD), so this covers the copy → splice
switch on a real tunnel. Marked slow (about 10-20 s on this machine).
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
import trio

from tests.helpers.proxy_process import proxy_process
from tests.helpers.socks5_client import connect_request, open_socks5

BLOCK = 1024 * 1024
BLOCKS = 1024  # 1 GiB


def blocks(seed: bytes) -> list[bytes]:
    return [struct.pack(">Q", i) + seed[8:] for i in range(BLOCKS)]


def expected_digest(seed: bytes) -> bytes:
    digest = hashlib.sha256()
    for block in blocks(seed):
        digest.update(block)
    return digest.digest()


async def send_blocks(stream: trio.SocketStream, seed: bytes) -> None:
    for block in blocks(seed):
        await stream.send_all(block)
    await stream.send_eof()


async def receive_digest(stream: trio.SocketStream) -> tuple[bytes, int]:
    digest = hashlib.sha256()
    total = 0
    while chunk := await stream.receive_some(BLOCK):
        digest.update(chunk)
        total += len(chunk)
    return digest.digest(), total


@pytest.mark.slow
async def test_one_gib_each_way_through_socks5_with_half_close() -> None:
    up_seed, down_seed = os.urandom(BLOCK), os.urandom(BLOCK)
    results: dict[str, tuple[bytes, int]] = {}
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with proxy_process(
        "--egress", "embedded", "--nat64-prefix", "2001:db8:64::/96", "--http", "off"
    ) as proxy:
        assert proxy.socks is not None
        with trio.fail_after(150):
            async with listeners[0], trio.open_nursery() as nursery:

                async def origin() -> None:
                    server = await listeners[0].accept()
                    async with server, trio.open_nursery() as inner:
                        inner.start_soon(send_blocks, server, down_seed)
                        results["up"] = await receive_digest(server)

                async def client() -> None:
                    assert proxy.socks is not None
                    stream, reply = await open_socks5(
                        proxy.socks, connect_request("127.0.0.1", port)
                    )
                    assert reply[1] == 0, reply  # RFC 1928 §6: succeeded
                    async with stream, trio.open_nursery() as inner:
                        inner.start_soon(send_blocks, stream, up_seed)
                        results["down"] = await receive_digest(stream)

                nursery.start_soon(origin)
                nursery.start_soon(client)
        await trio.sleep(0.3)
        log = proxy.output()
    assert results["up"] == (expected_digest(up_seed), BLOCK * BLOCKS)
    assert results["down"] == (expected_digest(down_seed), BLOCK * BLOCKS)
    assert f"up {BLOCK * BLOCKS} down {BLOCK * BLOCKS}" in log  # the recorder counted it all
