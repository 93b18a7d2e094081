"""A fast HTTP/1.1 origin for the benchmark: sources and sinks bytes at kernel speed.

Run as its own process (the harness starts it and stops it by PID):
    python bench/origins.py --listen ::1 --listen 127.0.0.1 --port 0 --workers 2
It prints one line `READY <port>` once every listener is bound.

Protocol (enough for curl, proxies and bench/loadgen.py; keep-alive supported):
  GET /<N> HTTP/1.1           -> 200 with Content-Length N, N bytes of random data
  POST /<anything> + body     -> body is read and dropped, then 200 with Content-Length 0
Absolute-form targets (`GET http://[::1]:P/<N>`) are accepted as well.

Why this shape: downloads go out with send(2) of slices of one random buffer (measured faster
than sendfile(2) from a file on loopback here: ~2.8 vs ~1.7 GB/s), uploads
are read with recv_into into one reused 1 MiB buffer; every worker is a selectors loop over
non-blocking sockets, forked after the listeners are bound, so the origin is never the
bottleneck (the harness shows it: `direct` runs far above every proxy). Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import selectors
import signal
import socket
import sys

SOURCE_SIZE = 4 * 1024 * 1024  # the random buffer downloads are cut from
RECV_SIZE = 1024 * 1024
MAX_HEAD = 16 * 1024
SMALL_BODY = 64 * 1024  # responses up to this size go out in one send


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Conn:
    """One client connection: reading a head, reading a body, or sending a response."""

    __slots__ = ("body_left", "head", "out", "send_left", "send_off", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""
        self.body_left = 0  # request body bytes still to drop
        self.out = b""  # response head (or small response) still to send
        self.send_left = 0  # sendfile bytes still to send after `out`
        self.send_off = 0


def parse_head(head: bytes) -> tuple[str, str, int]:
    """Return (method, last path segment, content-length) of a request head."""
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].decode("latin-1").split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return method, target.rsplit("/", 1)[-1], length


class Worker:
    def __init__(self, listeners: list[socket.socket], source: memoryview) -> None:
        self.sel = selectors.DefaultSelector()
        self.source = source
        self.buf = bytearray(RECV_SIZE)
        self.view = memoryview(self.buf)
        for lsock in listeners:
            self.sel.register(lsock, selectors.EVENT_READ, None)

    def close(self, conn: Conn) -> None:
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def accept(self, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def on_readable(self, conn: Conn) -> None:
        try:
            n = conn.sock.recv_into(self.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        if n == 0:
            self.close(conn)
            return
        data = self.view[:n]
        while data:
            if conn.body_left:
                take = min(conn.body_left, len(data))
                conn.body_left -= take
                data = data[take:]
                if conn.body_left == 0:
                    self.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
                continue
            conn.head += bytes(data)
            data = data[:0]
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.head) > MAX_HEAD:
                    self.close(conn)
                return
            head, rest = conn.head[:end], conn.head[end + 4 :]
            conn.head = b""
            try:
                method, segment, length = parse_head(head)
            except ValueError:
                self.close(conn)
                return
            if method == "GET":
                size = int(segment) if segment.isdigit() else 0
                reply = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
                self.respond(conn, reply, size)
            elif length:
                conn.body_left = length
                if b"100-continue" in head.lower():  # curl waits 1 s for this otherwise
                    self.respond(conn, b"HTTP/1.1 100 Continue\r\n\r\n", 0)
            else:
                self.respond(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
            data = memoryview(rest)

    def respond(self, conn: Conn, head: bytes, size: int) -> None:
        if size <= SMALL_BODY:
            # head and body in one send: two small writes would let Nagle + delayed ACK in
            # a relaying proxy add ~40 ms, an artifact of the origin, not of the proxy
            conn.out += head + bytes(self.source[:size])
            size = 0
        else:
            conn.out += head
        conn.send_left += size
        self.flush(conn)

    def flush(self, conn: Conn) -> None:
        try:
            while conn.out:
                sent = conn.sock.send(conn.out)
                conn.out = conn.out[sent:]
            while conn.send_left:
                count = min(conn.send_left, SOURCE_SIZE - conn.send_off)
                sent = conn.sock.send(self.source[conn.send_off : conn.send_off + count])
                conn.send_left -= sent
                conn.send_off = (conn.send_off + sent) % SOURCE_SIZE
        except (BlockingIOError, InterruptedError):
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        except OSError:
            self.close(conn)
            return
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def run(self) -> None:
        while True:
            for key, events in self.sel.select():
                if key.data is None:
                    self.accept(key.fileobj)  # type: ignore[arg-type]
                    continue
                conn: Conn = key.data
                if events & selectors.EVENT_WRITE:
                    self.flush(conn)
                    if conn.sock.fileno() < 0:
                        continue
                if events & selectors.EVENT_READ and not (conn.out or conn.send_left):
                    self.on_readable(conn)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", action="append", default=[], help="address, repeatable")
    parser.add_argument("--port", type=int, default=0, help="same port on every address")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    raise_fd_limit()
    hosts = args.listen or ["::1", "127.0.0.1"]
    first = bind(hosts[0], args.port)
    port = first.getsockname()[1]
    listeners = [first] + [bind(host, port) for host in hosts[1:]]
    source = memoryview(os.urandom(SOURCE_SIZE))
    children: list[int] = []
    for _ in range(max(1, args.workers) - 1):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            Worker(listeners, source).run()
            os._exit(0)
        children.append(pid)

    def stop(_signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    Worker(listeners, source).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
