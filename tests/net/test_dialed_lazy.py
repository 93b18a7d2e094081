"""A dialed connection is its socket until a task needs a trio stream.

The hub paths (the executor's SOCKS and CONNECT tunnels, HTTP forwarding of small
bodies) read and write the dialed socket's fd: no trio.SocketStream is made for them, the
socket is closed plainly, and only SOCKS reads the socket's own address (BND.ADDR,
RFC 1928 §6). A task path (a large HTTP body moved outside h11, a relay in a task) gets
the stream made on demand over the same socket, and closing then goes through trio so a
task waiting on it wakes. Each test asserts on the Dialed objects the real Dialer gave.

Real sockets on loopback only.
"""

from __future__ import annotations

import hashlib
import socket
from functools import partial
from ipaddress import IPv6Address

import pytest
import trio
import trio.testing

from proxy64.defaults import HTTP_SPLICE_BODY_MIN
from proxy64.destination import Destination, Egress
from proxy64.net.context import ProxyContext
from proxy64.net.dial_types import Dialed
from proxy64.net.dialer import Dialer
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots
from tests.helpers.fakes import NSP, ListRecorder
from tests.helpers.http_proxy import loopback_pair, plain_context, serve_socket
from tests.helpers.hub_fronts import LoopbackResolver
from tests.helpers.socks_fronts import NOAUTH, connect, echo_once, serve_socks
from tests.helpers.spy_dialer import SpyDialer
from tests.helpers.streams import HEAD_END, receive_all, receive_exactly, receive_head


def closed(dialed: Dialed) -> bool:
    assert dialed.sock is not None
    return dialed.sock.fileno() == -1


def stream_made(dialed: Dialed) -> bool:
    """dialed.has_stream read afresh: after `assert not dialed.has_stream` mypy narrows the
    property and does not know that reading `dialed.stream` makes one."""
    return dialed.has_stream


async def test_dial_gives_the_socket_with_nodelay_and_a_stream_only_when_asked() -> None:
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    with listener:
        port = listener.getsockname()[1]
        dialed = Dialer(LoopbackResolver(), NSP, Egress.NAT64).connect_now(
            Destination(IPv6Address("::1"), port)
        )
        assert isinstance(dialed, Dialed)  # the premise: loopback completes in connect(2)
        accepted, peer = listener.accept()
    with accepted:
        assert isinstance(dialed.sock, socket.socket) and not dialed.has_stream
        assert dialed.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # RFC 1928 §6 BND.ADDR: the address the origin sees the connection come from
        assert dialed.local == (IPv6Address(peer[0]), peer[1])
        assert not dialed.has_stream  # reading the address made no stream
        stream = dialed.stream
        assert isinstance(stream, trio.SocketStream) and stream_made(dialed)
        assert stream.socket.fileno() == dialed.sock.fileno()  # the same socket
        assert dialed.stream is stream  # made once
        with trio.fail_after(5):
            await stream.send_all(b"through the stream")
            accepted.settimeout(5)
            assert accepted.recv(100) == b"through the stream"
        dialed.close()
        assert closed(dialed)


async def test_close_is_plain_without_a_stream_and_wakes_a_task_with_one(
    nursery: trio.Nursery,
) -> None:
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    dialer = Dialer(LoopbackResolver(), NSP, Egress.NAT64)
    with listener:
        destination = Destination(IPv6Address("::1"), listener.getsockname()[1])
        plain = dialer.connect_now(destination)
        wrapped = dialer.connect_now(destination)
        assert isinstance(plain, Dialed) and isinstance(wrapped, Dialed)
        plain.close()
        assert closed(plain) and not plain.has_stream
        plain.close()  # once: a second close does nothing
        woken = trio.Event()

        async def receive() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await wrapped.stream.receive_some(10)
            woken.set()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        wrapped.close()  # trio's close: the waiting task is told, not left hanging
        with trio.fail_after(5):
            await woken.wait()
        assert closed(wrapped)


async def origin_echo(peers: list[tuple[str, int]], stream: trio.SocketStream) -> None:
    peers.append(stream.socket.getpeername()[:2])
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def test_rfc1928_6_socks5_tunnel_in_the_hub_replies_the_sockets_address_and_makes_no_stream(
    nursery: trio.Nursery,
) -> None:
    peers: list[tuple[str, int]] = []
    listeners = await nursery.start(partial(trio.serve_tcp, partial(origin_echo, peers), 0,
                                            host="::1"))  # fmt: skip
    origin = listeners[0].socket.getsockname()[1]
    dialer, recorder, hub = SpyDialer(NSP), ListRecorder(), RelayHub()
    ctx = ProxyContext(
        dialer=dialer,
        recorder=recorder,
        relay=Relay(idle_timeout=10.0, hub=hub),  # the hub carries the tunnel
        credentials=None,
        handshake_timeout=5.0,
        idle_timeout=10.0,
        connection_slots=ConnectionSlots(8),
        hub=hub,
    )
    port, _ = await serve_socks(nursery, ctx)
    with trio.fail_after(10):
        client = await connect(port)
        with client:
            request = b"\x05\x01\x00\x04" + IPv6Address("::1").packed + origin.to_bytes(2, "big")
            await client.send(NOAUTH + request)
            assert await receive_exactly(client, 2) == b"\x05\x00"
            reply = await receive_exactly(client, 22)
            await echo_once(client, b"in the hub")
            client.shutdown(socket.SHUT_WR)
            assert await receive_all(client) == b""
        (record,) = await recorder.wait_for(1)
    assert record.outcome == "ok"
    (dialed,) = dialer.given
    ((host, bound_port),) = peers
    assert reply[:4] == b"\x05\x00\x00\x04"
    assert reply[4:] == IPv6Address(host).packed + bound_port.to_bytes(2, "big")
    assert not dialed.has_stream and closed(dialed)


async def sized_origin(size: int, stream: trio.SocketStream) -> None:
    """Answers one request head with a body of `size` bytes (a fixed pattern)."""
    with trio.fail_after(10):
        if HEAD_END not in await receive_head(stream, short_ok=True):
            return
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        await stream.send_all(pattern(size))
        while await stream.receive_some(65536):
            pass


def pattern(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("size", "streamed"),
    [(2, False), (HTTP_SPLICE_BODY_MIN * 8 + 3, True)],
    ids=["small-in-the-hub", "large-moved-in-a-task"],
)
async def test_http_forwarding_makes_a_stream_only_for_a_body_moved_in_a_task(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, size: int, streamed: bool
) -> None:
    """A small response is forwarded on the socket's fd; a large one (RFC 9112 §6.3
    Content-Length, moved outside h11 by a task) through the stream made for it. HTTP
    never asks for the outbound socket's own address."""
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(sized_origin, size), 0, host="::1")
    )
    origin = listeners[0].socket.getsockname()[1]
    asked: list[Dialed] = []
    real_local = Dialed.__dict__["local"]

    def spy(self: Dialed) -> object:
        asked.append(self)
        return real_local.__get__(self)

    monkeypatch.setattr(Dialed, "local", property(spy))
    dialer, recorder = SpyDialer(NSP), ListRecorder()
    ours, theirs = loopback_pair()
    ours.sendall(f"GET http://[::1]:{origin}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    ours.shutdown(socket.SHUT_WR)
    with trio.fail_after(10):
        await serve_socket(plain_context(dialer, recorder), theirs)
    answer = read_all(ours)
    ours.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern(size)).digest()
    (record,) = recorder.records
    assert record.outcome == "ok" and record.bytes_down >= size
    (dialed,) = dialer.given
    assert dialed.has_stream is streamed and closed(dialed)
    assert asked == []
