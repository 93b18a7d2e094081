"""bench/reference_relay.py, the benchmark's reference target, must be a correct relay
(or its figures mean nothing): started the way bench/peers.py starts it, it carries 8 MiB
each way byte-exact with half-close, and refuses a domain name (literals only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from bench import peers
from tests.helpers.socks5_client import connect_request, open_socks5
from tests.helpers.streams import receive_all

MiB = 1024 * 1024


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
                client, reply = await open_socks5(
                    ("127.0.0.1", server.ports["socks5"]),
                    connect_request("127.0.0.1", origin_port),
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

            refused, reply = await open_socks5(
                ("127.0.0.1", server.ports["socks5"]), connect_request("example.org", 80)
            )
            assert reply[:2] == b"\x05\x08"  # RFC 1928 §6: address type not supported
            await refused.aclose()
        assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    finally:
        server.stop()
