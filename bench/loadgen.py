"""The benchmark's load generator: cheap clients for bulk, connection-rate and idle tests.

Every client speaks HTTP/1.1 to bench/origins.py, through one of four first hops:
  direct   TCP straight to the origin
  socks5   RFC 1928 greeting (no auth) + CONNECT, then the request in origin-form
  connect  HTTP CONNECT (RFC 9110 §9.3.6), then the request in origin-form
  http     the request in absolute-form sent to the proxy (RFC 9112 §3.2.2)

Why this shape: the generator must cost less than the proxies it measures, so the
connection tests are one selectors loop over raw non-blocking sockets (no asyncio, no
threads), every handshake is a precomputed byte string, and bulk transfers are blocking
`recv_into`/`sendall` into one reused buffer, one process per parallel stream.
Every loop is bounded by a count and a deadline; every address is loopback.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, TypeVar

_R = TypeVar("_R")

BUF_SIZE = 1024 * 1024
CRLF = b"\r\n"
_UPLOAD_DATA = os.urandom(BUF_SIZE)  # binary: pproxy's HTTP forwarder breaks on some bodies


@dataclass(frozen=True)
class Target:
    """One thing to measure: a first hop (None for direct) and how to speak to it."""

    label: str  # e.g. "proxy64/socks5"
    kind: str  # direct | socks5 | connect | http
    proxy: tuple[str, int] | None = None
    server: str = "direct"  # which process serves it (for CPU/memory sampling)


@dataclass(frozen=True)
class Origin:
    host: str  # "::1" or "127.0.0.1"
    port: int

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class LoadError(Exception):
    """A proxy or origin answered something other than success."""


# A reader looks at the bytes received so far for one step and returns how many bytes
# complete it, or None if more are needed. It raises LoadError on a refusal.
Reader = Callable[[bytes], int | None]


def read_socks_greeting(buf: bytes) -> int | None:
    if len(buf) < 2:
        return None
    if buf[:2] != b"\x05\x00":
        raise LoadError(f"SOCKS5 method selection refused: {buf[:2]!r}")
    return 2


def read_socks_reply(buf: bytes) -> int | None:
    # RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT
    if len(buf) < 5:
        return None
    if buf[1] != 0:
        raise LoadError(f"SOCKS5 reply {buf[1]:#04x}")
    atyp = buf[3]
    size = {1: 10, 4: 22}.get(atyp, 7 + buf[4])
    return size if len(buf) >= size else None


def read_connect_reply(buf: bytes) -> int | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    status = buf.split(b" ", 2)[1] if b" " in buf else b""
    if status != b"200":
        raise LoadError(f"CONNECT refused: {buf.split(CRLF, 1)[0]!r}")
    return end + 4


def read_http_response(buf: bytes) -> int | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end]
    if head.split(b" ", 2)[1:2] != [b"200"]:
        raise LoadError(f"HTTP status line {head.split(CRLF, 1)[0]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = end + 4 + length
    return total if len(buf) >= total else None


def socks5_connect_request(origin: Origin) -> bytes:
    addr = ip_address(origin.host)
    atyp = b"\x04" if addr.version == 6 else b"\x01"
    return b"\x05\x01\x00" + atyp + addr.packed + struct.pack("!H", origin.port)


def handshake(target: Target, origin: Origin) -> list[tuple[bytes, Reader]]:
    """The steps that turn a fresh connection to the first hop into a tunnel."""
    if target.kind == "socks5":
        return [
            (b"\x05\x01\x00", read_socks_greeting),
            (socks5_connect_request(origin), read_socks_reply),
        ]
    if target.kind == "connect":
        auth = origin.authority
        request = f"CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n".encode()
        return [(request, read_connect_reply)]
    return []


def request_head(target: Target, origin: Origin, method: str, path: str, length: int = 0) -> bytes:
    auth = origin.authority
    where = f"http://{auth}{path}" if target.kind == "http" else path
    extra = f"Content-Length: {length}\r\n" if method == "POST" else ""
    return f"{method} {where} HTTP/1.1\r\nHost: {auth}\r\n{extra}\r\n".encode()


def first_hop(target: Target, origin: Origin) -> tuple[str, int]:
    return target.proxy if target.proxy is not None else (origin.host, origin.port)


def new_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def context_switches() -> int:
    """Voluntary + involuntary context switches of this process so far (getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- connection-rate engine --------------------------------------------------------------


@dataclass
class _Client:
    sock: socket.socket
    steps: list[tuple[bytes, Reader]]
    started: float
    step: int = 0
    sent: int = 0
    inbuf: bytes = b""
    first_byte: float = 0.0
    connected: bool = False


@dataclass
class ConnResult:
    done: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # connect start -> response complete
    ttfb: list[float] = field(default_factory=list)  # connect start -> first response byte
    loadgen_cpu: float = 0.0  # seconds of this process's CPU during the run
    first_error: str = ""
    held: list[socket.socket] = field(default_factory=list)  # keep_open: the live tunnels


def run_connections(
    target: Target,
    origin: Origin,
    total: int,
    concurrency: int,
    time_limit: float,
    *,
    path: str = "/1",
    keep_open: bool = False,
) -> ConnResult:
    """Open `total` tunnels, `concurrency` at a time; each makes one small request.

    With keep_open the tunnels stay open (for the idle-memory test) and are returned in
    `held`; the caller closes them. Stops at `time_limit` seconds whatever the count.
    """
    steps = [
        *handshake(target, origin),
        (request_head(target, origin, "GET", path), read_http_response),
    ]
    hop = first_hop(target, origin)
    sel = selectors.DefaultSelector()
    result = ConnResult()
    launched = 0
    live = 0
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    deadline = t0 + time_limit

    def launch() -> None:
        nonlocal launched, live
        sock = new_socket(hop[0])
        sock.setblocking(False)
        client = _Client(sock, steps, time.perf_counter())
        err = sock.connect_ex(hop)
        if err not in (0, 115):  # 115 = EINPROGRESS
            sock.close()
            fail(None, f"connect: {os.strerror(err)}")
            launched += 1
            return
        sel.register(sock, selectors.EVENT_WRITE, client)
        launched += 1
        live += 1

    def fail(client: _Client | None, why: str) -> None:
        nonlocal live
        result.errors += 1
        if not result.first_error:
            result.first_error = why
        if client is not None:
            sel.unregister(client.sock)
            client.sock.close()
            live -= 1

    def finish(client: _Client, now: float) -> None:
        nonlocal live
        result.done += 1
        result.latencies.append(now - client.started)
        result.ttfb.append(client.first_byte - client.started)
        sel.unregister(client.sock)
        if keep_open:
            result.held.append(client.sock)
        else:
            client.sock.close()
        live -= 1

    def pump_send(client: _Client) -> None:
        data = client.steps[client.step][0]
        client.sent += client.sock.send(data[client.sent :])
        if client.sent < len(data):
            sel.modify(client.sock, selectors.EVENT_WRITE, client)
        else:
            sel.modify(client.sock, selectors.EVENT_READ, client)

    try:
        while launched < total or live:
            while launched < total and live < concurrency and time.perf_counter() < deadline:
                launch()
            if live == 0:
                break
            timeout = deadline - time.perf_counter()
            if timeout <= 0:
                break
            for key, _events in sel.select(timeout):
                client: _Client = key.data
                try:
                    if not client.connected:
                        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            fail(client, f"connect: {os.strerror(err)}")
                            continue
                        client.connected = True
                        pump_send(client)
                        continue
                    if client.sent < len(client.steps[client.step][0]):
                        pump_send(client)
                        continue
                    chunk = client.sock.recv(65536)
                    if not chunk:
                        fail(client, f"closed by peer at step {client.step}: {client.inbuf[:80]!r}")
                        continue
                    now = time.perf_counter()
                    if client.step == len(client.steps) - 1 and not client.inbuf:
                        client.first_byte = now
                    client.inbuf += chunk
                    used = client.steps[client.step][1](client.inbuf)
                    if used is None:
                        continue
                    client.inbuf = client.inbuf[used:]
                    client.step += 1
                    client.sent = 0
                    if client.step == len(client.steps):
                        finish(client, now)
                    else:
                        pump_send(client)
                except (OSError, LoadError, ValueError, IndexError) as exc:
                    fail(client, f"{type(exc).__name__}: {exc}")
    finally:
        result.elapsed = time.perf_counter() - t0
        result.loadgen_cpu = cpu_seconds() - cpu0
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
            result.errors += 1
            if not result.first_error:
                result.first_error = "deadline reached with connections in flight"
        sel.close()
    return result


# --- bulk transfers ----------------------------------------------------------------------


def open_tunnel(target: Target, origin: Origin, timeout: float) -> socket.socket:
    """A blocking socket whose next bytes reach the origin (or, for http, the proxy)."""
    hop = first_hop(target, origin)
    sock = new_socket(hop[0])
    sock.settimeout(timeout)
    try:
        sock.connect(hop)
        for data, reader in handshake(target, origin):
            sock.sendall(data)
            buf = b""
            while (used := reader(buf)) is None:
                chunk = sock.recv(4096)
                if not chunk:
                    raise LoadError("proxy closed during handshake")
                buf += chunk
            if used != len(buf):
                raise LoadError("unexpected bytes after the handshake reply")
    except BaseException:
        sock.close()
        raise
    return sock


def _read_head(sock: socket.socket) -> tuple[int, bytes]:
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise LoadError("closed before the response head")
        buf += chunk
    head = buf[:end]
    if head.split(b" ", 2)[1:2] != [b"200"]:
        raise LoadError(f"HTTP status line {head.split(CRLF, 1)[0]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return length, buf[end + 4 :]


def download(
    sock: socket.socket, target: Target, origin: Origin, size: int, deadline: float
) -> int:
    sock.sendall(request_head(target, origin, "GET", f"/{size}"))
    length, rest = _read_head(sock)
    got = len(rest)
    buf = bytearray(BUF_SIZE)
    while got < length:
        n = sock.recv_into(buf)
        if n == 0:
            raise LoadError(f"download closed after {got} of {length} bytes")
        got += n
        if time.perf_counter() > deadline:
            raise LoadError(f"download over its time limit at {got} of {length} bytes")
    return got


def upload(sock: socket.socket, target: Target, origin: Origin, size: int, deadline: float) -> int:
    sock.sendall(request_head(target, origin, "POST", "/sink", size))
    view = memoryview(_UPLOAD_DATA)
    left = size
    while left:
        n = min(left, len(view))
        sock.sendall(view[:n])
        left -= n
        if time.perf_counter() > deadline:
            raise LoadError(f"upload over its time limit with {left} bytes left")
    _read_head(sock)
    return size


def echo(target: Target, origin: Origin, trips: int, time_limit: float) -> list[float]:
    """Seconds per round trip of `trips` ping-pongs inside one established tunnel.

    Each trip: one keep-alive `GET /1` written in one send, then blocking reads until the
    whole response is here; the next request goes out only after it. The tunnel (and the
    first exchange, which may still run on a set-up path) is not timed: what remains is
    what a tunnel adds to a round trip of an interactive protocol.
    """
    request = request_head(target, origin, "GET", "/1")
    with open_tunnel(target, origin, time_limit) as sock:
        deadline = time.perf_counter() + time_limit
        times: list[float] = []
        for trip in range(trips + 1):
            start = time.perf_counter()
            sock.sendall(request)
            buf = b""
            while (used := read_http_response(buf)) is None:
                chunk = sock.recv(4096)
                if not chunk:
                    raise LoadError(f"echo: closed after {trip} round trips")
                buf += chunk
            end = time.perf_counter()
            if used != len(buf):
                raise LoadError("echo: bytes after the response")
            if trip:  # the first exchange warms the tunnel
                times.append(end - start)
            if end > deadline:
                raise LoadError(f"echo over its time limit after {trip} round trips")
    return times


@dataclass(frozen=True)
class BulkResult:
    nbytes: int
    seconds: float
    error: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds > 0 and not self.error else 0.0


def _run_all(
    procs: list[Any],
    out: Any,
    time_limit: float,
    lost: Callable[[str], _R],
) -> list[_R]:
    """Start the forked load processes, gather one result each (a lost one becomes
    lost(why)), then reap them all; one still alive after 5 s is killed by its PID."""
    for proc in procs:
        proc.start()
    results: list[_R] = []
    try:
        for _ in procs:
            results.append(out.get(timeout=time_limit + 10))
    except Exception as exc:
        results.append(lost(type(exc).__name__))
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, 9)
                proc.join()
    return results


def _bulk_worker(
    target: Target,
    origin: Origin,
    direction: str,
    size: int,
    time_limit: float,
    barrier: multiprocessing.synchronize.Barrier,
    out: multiprocessing.queues.Queue[tuple[float, float, int, str]],
) -> None:
    start = end = 0.0
    done = 0
    error = ""
    sock = None
    try:
        sock = open_tunnel(target, origin, time_limit)
        barrier.wait(time_limit)
        start = time.perf_counter()
        move = download if direction == "download" else upload
        done = move(sock, target, origin, size, start + time_limit)
        end = time.perf_counter()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            barrier.abort()
    finally:
        if sock is not None:
            sock.close()
    out.put((start, end, done, error))


def bulk(
    target: Target, origin: Origin, direction: str, size: int, streams: int, time_limit: float
) -> BulkResult:
    """Move `size` bytes in total over `streams` parallel tunnels (one process each).

    The clock runs from the first stream's start (after every tunnel is open, a barrier)
    to the last stream's end: aggregate throughput as an app would see it.
    """
    if streams == 1:
        try:
            with open_tunnel(target, origin, time_limit) as sock:
                start = time.perf_counter()
                move = download if direction == "download" else upload
                done = move(sock, target, origin, size, start + time_limit)
                return BulkResult(done, time.perf_counter() - start)
        except (OSError, LoadError) as exc:
            return BulkResult(0, 0.0, f"{type(exc).__name__}: {exc}")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(streams)
    out: multiprocessing.queues.Queue[tuple[float, float, int, str]] = ctx.Queue()
    per = size // streams
    procs = [
        ctx.Process(
            target=_bulk_worker, args=(target, origin, direction, per, time_limit, barrier, out)
        )
        for _ in range(streams)
    ]
    results = _run_all(procs, out, time_limit, lambda why: (0.0, 0.0, 0, f"worker lost: {why}"))
    errors = [r[3] for r in results if r[3]]
    if errors or len(results) < streams:
        return BulkResult(0, 0.0, errors[0] if errors else "missing stream results")
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    return BulkResult(sum(r[2] for r in results), end - start)


# --- several load processes (the workers phase) ------------------------------------------


@dataclass(frozen=True)
class ParallelConnResult:
    """run_connections in several processes at once; each process's own figures kept."""

    done: int
    errors: int
    elapsed: float  # first process's start -> last process's end
    cpu: list[float]  # seconds of CPU each load process used during its run
    switches: list[int]  # context switches (voluntary + involuntary) of each load process
    first_error: str = ""

    @property
    def conn_per_s(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def _conn_worker(
    target: Target,
    origin: Origin,
    total: int,
    concurrency: int,
    time_limit: float,
    barrier: multiprocessing.synchronize.Barrier,
    out: multiprocessing.queues.Queue[tuple[float, float, int, int, float, int, str]],
) -> None:
    start = end = cpu = 0.0
    done = errors = switches = 0
    error = ""
    try:
        barrier.wait(time_limit)
        start = time.perf_counter()
        before = context_switches()
        res = run_connections(target, origin, total, concurrency, time_limit)
        switches = context_switches() - before
        end = start + res.elapsed
        done, errors, cpu, error = res.done, res.errors, res.loadgen_cpu, res.first_error
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            barrier.abort()
    out.put((start, end, done, errors, cpu, switches, error))


def run_connections_parallel(
    target: Target,
    origin: Origin,
    total: int,
    concurrency: int,
    time_limit: float,
    processes: int = 2,
) -> ParallelConnResult:
    """`total` connections, `concurrency` in flight in all, split over `processes` forked
    load processes that start together (a barrier): no single generator core is the limit.
    Each process's CPU is its own getrusage delta, so the caller can show it is not at 100 %.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(processes)
    out: multiprocessing.queues.Queue[tuple[float, float, int, int, float, int, str]] = ctx.Queue()
    share = [total // processes + (1 if i < total % processes else 0) for i in range(processes)]
    inflight = [max(1, concurrency // processes)] * processes
    procs = [
        ctx.Process(
            target=_conn_worker,
            args=(target, origin, share[i], inflight[i], time_limit, barrier, out),
        )
        for i in range(processes)
    ]
    results = _run_all(
        procs, out, time_limit, lambda why: (0.0, 0.0, 0, 0, 0.0, 0, f"load process lost: {why}")
    )
    started = [r[0] for r in results if r[1] > 0]
    ended = [r[1] for r in results if r[1] > 0]
    errors = [r[6] for r in results if r[6]]
    return ParallelConnResult(
        done=sum(r[2] for r in results),
        errors=sum(r[3] for r in results) + (processes - len(started)),
        elapsed=(max(ended) - min(started)) if started else 0.0,
        cpu=[r[4] for r in results],
        switches=[r[5] for r in results],
        first_error=errors[0] if errors else "",
    )
