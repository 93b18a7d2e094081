"""A minimal HTTP/1.1 forwarding proxy on trio and h11: the reference for forwarding.

It shows, in the same run as proxy64, what the stack proxy64 is written in (Python, trio,
h11 on both sides of every exchange) costs per forwarded request on this machine, with
nothing else around it, so proxy64's forwarding figures can be read against the stack's
own floor as well as against tinyproxy. Deliberately minimal: absolute-form http:// URLs
to IPv4 or IPv6 literals only (RFC 9112 §3.2.2), no resolver, no limits, no timeouts, no
logging, no Via; one task per client connection, a new origin connection per request.
What a forwarding proxy must do is kept: the request goes on in origin-form with Host
from the target (RFC 9112 §3.2.1, §3.2.2), hop-by-hop fields are dropped both ways
(RFC 9110 §7.6.1), bodies are streamed through h11 events, keep-alive follows h11.

    python bench/reference_http.py --listen 127.0.0.1 --port 8080

Not part of the product: the benchmark starts it (bench/peers.py, server `reference-http`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from pathlib import Path

import h11
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from bench.reference_relay import main
from proxy64.proto.http_headers import HOP_BY_HOP

READ_SIZE = 65536


def end_to_end(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields to pass on: not hop-by-hop, not named by Connection, not Host."""
    drop = {b"host", *HOP_BY_HOP}
    for name, value in headers:
        if name.lower() in (b"connection", b"proxy-connection"):
            drop.update(token.strip().lower() for token in value.split(b","))
    return [(n, v) for n, v in headers if n.lower() not in drop]


async def next_event(conn: h11.Connection, sock: trio.socket.SocketType) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        conn.receive_data(await sock.recv(READ_SIZE))


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view) :]


def split_target(target: bytes) -> tuple[str, int, bytes, bytes]:
    """http://host[:port]/path → (address, port, authority, path)."""
    if not target.lower().startswith(b"http://"):
        raise ValueError("only absolute-form http:// targets")
    rest = target[7:]
    slash = rest.find(b"/")
    authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
    if authority.startswith(b"["):
        host, _, port = authority[1:].partition(b"]")
        port = port[1:]
    else:
        host, _, port = authority.partition(b":")
    address = str(ipaddress.ip_address(host.decode("ascii")))  # literals only
    return address, int(port or b"80"), authority, path


def encoded(conn: h11.Connection, answer: h11.Response) -> bytes:
    return (conn.send(answer) or b"") + (conn.send(h11.EndOfMessage()) or b"")


async def exchange(client: trio.socket.SocketType, conn: h11.Connection, head: h11.Request) -> bool:
    """One request forwarded and its response passed back; False: close the client."""
    try:
        address, port, authority, path = split_target(head.target)
    except ValueError:
        answer = h11.Response(status_code=400, headers=[(b"Content-Length", b"0")])
        await send_all(client, encoded(conn, answer))
        return False
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_STREAM) as origin:
        origin.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await origin.connect((address, port))
        except OSError:
            answer = h11.Response(status_code=502, headers=[(b"Content-Length", b"0")])
            await send_all(client, encoded(conn, answer))
            return False
        upstream = h11.Connection(h11.CLIENT)
        headers = [(b"Host", authority), *end_to_end(head.headers.raw_items())]
        out = upstream.send(h11.Request(method=head.method, target=path, headers=headers)) or b""
        while True:  # the request's body, if any, as h11 frames it
            event = await next_event(conn, client)
            if isinstance(event, h11.Data):
                out += upstream.send(h11.Data(data=event.data)) or b""
                if len(out) >= READ_SIZE:
                    await send_all(origin, out)
                    out = b""
            elif isinstance(event, h11.EndOfMessage):
                out += upstream.send(h11.EndOfMessage()) or b""
                break
            else:
                return False
        await send_all(origin, out)
        out = b""
        while True:
            event = await next_event(upstream, origin)
            if isinstance(event, h11.Response):
                kept = end_to_end(event.headers.raw_items())
                response = h11.Response(
                    status_code=event.status_code, headers=kept, reason=event.reason
                )
                out = conn.send(response) or b""
            elif isinstance(event, h11.Data):
                out += conn.send(h11.Data(data=event.data)) or b""
            elif isinstance(event, h11.EndOfMessage):
                await send_all(client, out + (conn.send(h11.EndOfMessage()) or b""))
                return True
            elif not isinstance(event, h11.InformationalResponse):
                return False
            if len(out) >= READ_SIZE:
                await send_all(client, out)
                out = b""


async def handle(client: trio.socket.SocketType) -> None:
    conn = h11.Connection(h11.SERVER)
    with client, contextlib.suppress(OSError, h11.ProtocolError):
        while True:
            event = await next_event(conn, client)
            if not isinstance(event, h11.Request) or not await exchange(client, conn, event):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


if __name__ == "__main__":
    main(__doc__.split("\n", 1)[0], handle)
