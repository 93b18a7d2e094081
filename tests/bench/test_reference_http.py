"""bench/reference_http.py, the benchmark's reference for HTTP forwarding, must be a
correct forwarding proxy (or its figures mean nothing): started the way bench/peers.py
starts it, it forwards curl's requests in origin-form with Host from the target and no
hop-by-hop fields, passes a body each way byte-exact (sha256), keeps the client's
connection alive across requests, and answers a name (not a literal) with 400."""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import h11
import trio

from bench import peers
from tests.helpers.curl import curl_async
from tests.helpers.requirements import require_tool
from tests.helpers.streams import receive_head

MiB = 1024 * 1024


async def test_forwards_in_origin_form_bodies_intact_and_keeps_alive(tmp_path: Path) -> None:
    require_tool("curl")
    server = peers.make_server("reference-http", tmp_path)
    await trio.to_thread.run_sync(server.start)
    upload, download = os.urandom(2 * MiB + 3), os.urandom(3 * MiB + 5)
    seen: list[h11.Request] = []
    bodies: list[bytes] = []

    async def origin(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Request):
                    seen.append(event)
                    body = b""
                    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(event, h11.Data):
                            body += event.data
                    bodies.append(body)
                    answer = download if seen[-1].method == b"GET" else b"ok"
                    headers = [
                        ("Content-Length", str(len(answer))),
                        ("Connection", "keep-alive, x-hop"),
                        ("X-Hop", "1"),
                    ]
                    out = conn.send(h11.Response(status_code=200, headers=headers))
                    out = (out or b"") + (conn.send(h11.Data(data=answer)) or b"")
                    await stream.send_all(out + (conn.send(h11.EndOfMessage()) or b""))
                    conn.start_next_cycle()
                else:
                    return

    try:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="::1"))
            port6 = listeners[0].socket.getsockname()[1]
            proxy = f"http://127.0.0.1:{server.ports['http']}"
            payload = tmp_path / "up.bin"
            payload.write_bytes(upload)
            url = f"http://127.0.0.1:{port}/up?x=1"
            # two requests on one curl connection: a POST with a body, then a GET
            result = await curl_async(
                "-x", proxy, "-s", "-H", "Proxy-Connection: keep-alive",
                "--data-binary", f"@{payload}", url, "--next", "-x", proxy, "-s",
                "-o", str(tmp_path / "down.bin"), "-D", str(tmp_path / "down.head"),
                "-w", "%{num_connects}", f"http://[::1]:{port6}/down",
            )  # fmt: skip
            nursery.cancel_scope.cancel()
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith(b"0"), result.stdout  # the second reused the connection
        got = (tmp_path / "down.bin").read_bytes()
        head = (tmp_path / "down.head").read_bytes().lower()
        assert b"x-hop" not in head and b"connection:" not in head, head
        assert hashlib.sha256(got).digest() == hashlib.sha256(download).digest()
        assert hashlib.sha256(bodies[0]).digest() == hashlib.sha256(upload).digest()
        first, second = seen
        assert (first.method, first.target, second.target) == (b"POST", b"/up?x=1", b"/down")
        assert dict(first.headers)[b"host"] == f"127.0.0.1:{port}".encode()
        assert dict(second.headers)[b"host"] == f"[::1]:{port6}".encode()
        names = {name for request in seen for name, _ in request.headers}
        assert not names & {b"proxy-connection", b"connection", b"keep-alive"}, names

        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", server.ports["http"])
            async with stream:
                await stream.send_all(
                    b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n"
                )
                answer = await receive_head(stream)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    finally:
        server.stop()
