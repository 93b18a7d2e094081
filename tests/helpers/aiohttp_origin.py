"""A real HTTP origin for tests: aiohttp on 127.0.0.1 and ::1, in a thread with its own loop.

    with running_origin() as origin:
        origin.url4("/echo"), origin.url6("/bytes/1000?seed=3")

Routes (all report what they saw, so tests assert behaviour, not canned answers):
  /echo                any method: JSON {method, path_qs, peer, sha256, length, headers}
  /bytes/{n}?seed=S    n bytes of pattern_bytes(n, S) with Content-Length
  /chunked/{n}?seed=S  the same bytes, chunked (no Content-Length)
  /status/{code}       an empty answer with that status (204, 304, ...)
  /cut/{n}             declares Content-Length n, sends n // 2 bytes, then drops the connection
  /drop                drops the connection without answering
origin.connections: the peer (host, port) of every TCP connection accepted, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024


_PATTERN_CHUNK = 64 * 1024 * 1024  # randbytes() takes at most 2**31 - 1 bits at once


def pattern_bytes(n: int, seed: int) -> bytes:
    generator = random.Random(seed)
    return b"".join(
        generator.randbytes(min(_PATTERN_CHUNK, n - at)) for at in range(0, n, _PATTERN_CHUNK)
    )


class Origin:
    def __init__(self) -> None:
        self.port4 = 0
        self.port6 = 0
        self.connections: list[tuple[str, int]] = []
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="aiohttp-origin", daemon=True)

    def url4(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port4}{path}"

    def url6(self, path: str) -> str:
        return f"http://[::1]:{self.port6}{path}"

    def connection_count(self) -> int:
        with self._lock:
            return len(self.connections)

    # --- handlers -------------------------------------------------------------------------

    def _note(self, request: web.Request) -> tuple[str, int]:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        key = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
        with self._lock:
            if key not in self._seen:
                self._seen.add(key)
                self.connections.append(key)
        return key

    async def _echo(self, request: web.Request) -> web.Response:
        peer = self._note(request)
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            digest.update(chunk)
            length += len(chunk)
        body: dict[str, Any] = {
            "method": request.method,
            "path_qs": request.path_qs,
            "peer": list(peer),
            "sha256": digest.hexdigest(),
            "length": length,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        }
        return web.json_response(body)

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        n = int(request.match_info["n"])
        data = pattern_bytes(n, int(request.query.get("seed", "0")))
        chunked = request.path.startswith("/chunked/")
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = n
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        if request.method != "HEAD":
            for i in range(0, n, CHUNK):
                await response.write(data[i : i + CHUNK])
        await response.write_eof()
        return response

    async def _status(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.Response(status=int(request.match_info["code"]))

    async def _cut(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        n = int(request.match_info["n"])
        response = web.StreamResponse()
        response.content_length = n
        await response.prepare(request)
        await response.write(b"x" * (n // 2))
        await asyncio.sleep(0.05)
        if request.transport is not None:
            request.transport.abort()
        return response

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        if request.transport is not None:
            request.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response()

    # --- the thread -----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_get("/bytes/{n}", self._bytes)
        app.router.add_get("/chunked/{n}", self._bytes)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/cut/{n}", self._cut)
        app.router.add_get("/drop", self._drop)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site4 = web.TCPSite(runner, "127.0.0.1", 0)
            await site4.start()
            site6 = web.TCPSite(runner, "::1", 0)
            await site6.start()
            self.port4 = _bound_port(site4)
            self.port6 = _bound_port(site6)
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the aiohttp origin did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"the aiohttp origin failed to start: {self._error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the asyncio Server here
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


@contextmanager
def running_origin() -> Iterator[Origin]:
    origin = Origin()
    origin.start()
    try:
        yield origin
    finally:
        origin.stop()
