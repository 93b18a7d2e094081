"""bench/reference_http.py, the benchmark's reference for HTTP forwarding, must be a
correct forwarding proxy (or its figures mean nothing): started the way bench/peers.py
starts it, it forwards curl's requests to a real origin (aiohttp) in origin-form with
Host from the target and no hop-by-hop field, passes a body each way byte-exact
(sha256), keeps the client's connection alive across requests, and answers a name (not
a literal) with 400."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import trio

from bench import peers
from tests.helpers.aiohttp_origin import pattern_bytes, running_origin
from tests.helpers.curl import curl_async
from tests.helpers.streams import receive_head

MiB = 1024 * 1024


async def test_forwards_in_origin_form_bodies_intact_and_keeps_alive(tmp_path: Path) -> None:
    server = peers.make_server("reference-http", tmp_path)
    await trio.to_thread.run_sync(server.start)
    upload = os.urandom(2 * MiB + 3)
    payload = tmp_path / "up.bin"
    payload.write_bytes(upload)
    proxy = f"http://127.0.0.1:{server.ports['http']}"
    try:
        with running_origin() as origin:
            size = 3 * MiB + 5
            # two requests on one curl connection to the proxy: a POST with a body to the
            # IPv4 origin, then a GET of a body from the IPv6 one
            result = await curl_async(
                "-x", proxy, "-H", "Connection: keep-alive, X-Hop", "-H", "X-Hop: 1",
                "--data-binary", f"@{payload}", origin.url4("/echo?x=1"),
                "--next", "-x", proxy, "-o", str(tmp_path / "down.bin"),
                "-w", "%{num_connects}", origin.url6(f"/bytes/{size}?seed=7"),
            )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen, _, connects = result.stdout.rpartition(b"}")
        echo = json.loads(seen + b"}")
        assert connects == b"0"  # the second request reused the connection to the proxy
        got = (tmp_path / "down.bin").read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(pattern_bytes(size, 7)).digest()
        assert echo["sha256"] == hashlib.sha256(upload).hexdigest()
        assert (echo["method"], echo["path_qs"]) == ("POST", "/echo?x=1")
        headers = {name.lower(): value for name, value in echo["headers"]}
        assert headers["host"] == f"127.0.0.1:{origin.port4}"
        assert not headers.keys() & {"x-hop", "connection", "proxy-connection", "keep-alive"}

        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", server.ports["http"])
            async with stream:
                await stream.send_all(b"GET http://example.org/ HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await receive_head(stream)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    finally:
        server.stop()
