"""The origin of the NAT64 test network: an HTTP server that reports the peer it saw, and a
UDP echo. Standard library only, so the same file runs in the tests (inside the origin
network namespace) and in the compose demo's `origin` container.

GET/HEAD any path -> 200, body "origin=LABEL peer=ADDRESS path=PATH\n". Through NAT64 the
peer is an address of tayga's dynamic pool, which is what the tests assert.
GET /bytes/N -> N bytes of pattern(N) (binary, every byte value), to check transfers.
POST any path -> "origin=LABEL peer=ADDRESS sha256=HEX length=N\n" of the request body.
UDP: every datagram is sent back unchanged to its sender.
"""

from __future__ import annotations

import argparse
import hashlib
import socket  # noqa: TID251 (a stand-alone server, not a proxy64 module)
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BYTES = 64 * 1024 * 1024  # largest /bytes/N answer


def pattern(length: int) -> bytes:
    """Deterministic binary bytes: SHA-256 blocks of a counter, so every byte value occurs."""
    blocks = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Handler(BaseHTTPRequestHandler):
    label = "origin"
    protocol_version = "HTTP/1.1"

    def _send(self, body: bytes, content_type: str, with_body: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _answer(self, with_body: bool) -> None:
        if self.path.startswith("/bytes/") and self.path[7:].isdigit():
            length = min(int(self.path[7:]), MAX_BYTES)
            self._send(pattern(length), "application/octet-stream", with_body)
            return
        body = f"origin={self.label} peer={self.client_address[0]} path={self.path}\n"
        self._send(body.encode(), "text/plain", with_body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_POST(self) -> None:
        remaining = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        length = int(self.headers.get("Content-Length", "0")) - remaining
        body = (
            f"origin={self.label} peer={self.client_address[0]} "
            f"sha256={digest.hexdigest()} length={length}\n"
        )
        self._send(body.encode(), "text/plain")

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.client_address[0]} {format % args}\n")


def make_http_server(host: str, port: int) -> ThreadingHTTPServer:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    return Server((host, port), Handler)


def udp_echo(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data, peer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="0.0.0.0:80", metavar="HOST:PORT")
    parser.add_argument("--udp", default=None, metavar="HOST:PORT", help="UDP echo address")
    parser.add_argument("--label", default="v4", help="reported as origin=LABEL")
    args = parser.parse_args()
    Handler.label = args.label
    if args.udp:
        threading.Thread(target=udp_echo, args=split_host_port(args.udp), daemon=True).start()
    server = make_http_server(*split_host_port(args.http))
    print(f"origin {args.label} serving HTTP on {args.http} UDP echo on {args.udp}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
