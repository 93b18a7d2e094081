"""The HTTP proxy's lean paths, each checked where it would break.

- A request head is read by the executor in the relay hub, its deadline a hub timer: no
  cancel scope; the forwarding exchange enters one only for a read that must wait, and a
  client that closed after its response ends the connection without one either.
- A loopback dial goes through the real Dialer's connect_now() (no awaited connect());
  a name the resolver has not cached still goes through connect(); a refused port is
  a 502.
- The 200 to CONNECT is h11's own encoding of it (HTTP/1.0 gets Connection: close).

Real sockets on loopback only; the client side is a connection written before the
executor takes it, so "already there" is certain, not a race.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import IPv6Address
from typing import Any

import h11
import pytest
import trio
import trio.testing

import proxy64
from proxy64.destination import Destination, Reached
from proxy64.net.http_upstream import Upstream
from proxy64.proto.httpproxy import TUNNEL_ESTABLISHED, tunnel_established
from tests.helpers.fakes import ListRecorder
from tests.helpers.http_proxy import loopback_pair, plain_context, serve_socket
from tests.helpers.hub_fronts import PREFIX
from tests.helpers.spy_dialer import SpyDialer
from tests.helpers.streams import HEAD_END, receive_head

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


PACKAGE = os.path.dirname(proxy64.__file__) + os.sep
ORIGIN_WAIT = "Upstream._receive"  # waits for the origin's answer: not a client-side read


@pytest.fixture
def scopes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The timeout scopes proxy64's own code enters while serving the client, wherever in
    the package that code lives, as "Caller.qualname: fail_at". Not counted: the tests'
    origin and relay, and the wait for the origin's answer (ORIGIN_WAIT), which cannot be
    in the socket already. That the counter sees the front end's scopes at all is
    test_the_scope_counter_sees_the_handshake_deadline's job."""
    entered: list[str] = []

    def counting(real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(PACKAGE) and caller.co_qualname != ORIGIN_WAIT:
                entered.append(f"{caller.co_qualname}: {real.__name__}")
            return real(*args, **kwargs)

        return wrapper

    for name in ("fail_at", "fail_after", "move_on_at", "move_on_after"):
        monkeypatch.setattr(trio, name, counting(getattr(trio, name)))
    yield entered


async def origin_server(stream: trio.SocketStream) -> None:
    """Reads one request head, answers RESPONSE, then echoes until EOF (for CONNECT)."""
    with trio.fail_after(10):
        buffer = await receive_head(stream, short_ok=True)
        if HEAD_END not in buffer:
            return
        await stream.send_all(RESPONSE)
        rest = buffer.partition(HEAD_END)[2]
        # The proxy closes an upstream it does not reuse; bytes echoed after the response
        # may still be unread in its socket then, which makes that close a reset.
        with contextlib.suppress(trio.BrokenResourceError):
            if rest:
                await stream.send_all(rest)
            while data := await stream.receive_some(65536):
                await stream.send_all(data)


async def start_origin(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, origin_server, 0, host="::1"))
    return int(listeners[0].socket.getsockname()[1])


def client_pair(data: bytes, *, close: bool) -> tuple[socket.socket, socket.socket]:
    """A connection whose accepted side already holds `data` (and the EOF if close)."""
    ours, theirs = loopback_pair()
    ours.sendall(data)
    if close:
        ours.shutdown(socket.SHUT_WR)
    return ours, theirs


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_the_origin_wait_left_out_of_the_count_exists() -> None:
    """ORIGIN_WAIT names a function that exists: renamed, the count would take it in and
    the tests below fail loudly rather than quietly count less."""
    assert getattr(Upstream, ORIGIN_WAIT.rpartition(".")[2]).__qualname__ == ORIGIN_WAIT


async def test_the_scope_counter_sees_the_exchange_wait(
    nursery: trio.Nursery, scopes: list[str]
) -> None:
    """The premise of every `scopes == []` below: a request body that is not in the
    socket yet is waited for by the exchange under the idle deadline, and the counter
    sees that scope. When the exchange's code moves, or stops calling trio's scope
    functions through the module, this fails instead of the others passing for nothing."""
    port = await start_origin(nursery)
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    head = f"POST http://[::1]:{port}/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"
    ours, theirs = client_pair(head.encode(), close=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(serve_socket, plain_context(dialer, recorder), theirs)
        await trio.testing.wait_all_tasks_blocked()  # the exchange waits for the body
        ours.sendall(b"ok")
        ours.shutdown(socket.SHUT_WR)
    answer = read_all(ours)
    ours.close()
    assert answer.endswith(b"\r\n\r\nhi")
    assert scopes and scopes[0].endswith(": fail_at"), scopes


async def test_get_with_head_and_eof_in_the_socket_uses_no_scope_and_connect_now(
    nursery: trio.Nursery, scopes: list[str]
) -> None:
    port = await start_origin(nursery)
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    head = f"GET http://[::1]:{port}/x HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    ours, theirs = client_pair(head, close=True)
    with trio.fail_after(10):
        await serve_socket(plain_context(dialer, recorder), theirs)
    answer = read_all(ours)
    ours.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhi")
    assert dialer.calls == ["connect_now"]
    assert scopes == []  # head read, dial and keep-alive EOF: no timeout scope entered
    (record,) = recorder.records
    assert record.outcome == "ok" and record.reached is Reached.NATIVE_IPV6
    assert record.remote == (IPv6Address("::1"), port)


async def test_connect_with_head_in_the_socket_uses_no_scope_and_connect_now(
    nursery: trio.Nursery, scopes: list[str]
) -> None:
    port = await start_origin(nursery)
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    # early bytes after the head: they form a request the origin answers first
    head = f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n".encode()
    ours, theirs = client_pair(head, close=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(serve_socket, plain_context(dialer, recorder), theirs)
        with trio.fail_after(10):
            got = b""
            want = b"HTTP/1.1 200 Connection Established\r\n\r\n" + RESPONSE
            ours.setblocking(False)
            while len(got) < len(want):
                await trio.lowlevel.wait_readable(ours)
                got += ours.recv(65536)
            ours.shutdown(socket.SHUT_WR)
    ours.close()
    assert got == want
    assert dialer.calls == ["connect_now"]
    assert scopes == []
    (record,) = recorder.records
    assert record.front_end == "http-connect" and record.outcome == "ok"
    assert record.bytes_up == len(b"GET / HTTP/1.1\r\n\r\n")


async def test_name_not_cached_goes_through_connect(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    head = f"GET http://origin.test:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    ours, theirs = client_pair(head, close=True)
    with trio.fail_after(10):
        await serve_socket(plain_context(dialer, recorder), theirs)
    answer = read_all(ours)
    ours.close()
    assert answer.endswith(b"\r\n\r\nhi")
    assert dialer.calls == ["connect_now", "connect"]
    (record,) = recorder.records
    assert record.destination == Destination("origin.test", port)


async def test_refused_port_through_connect_now_is_502() -> None:
    with socket.socket(socket.AF_INET6) as unused:  # a port nobody listens on
        unused.bind(("::1", 0))
        port = unused.getsockname()[1]
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    ours, theirs = client_pair(
        f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: a\r\n\r\n".encode(), close=True
    )
    with trio.fail_after(10):
        await serve_socket(plain_context(dialer, recorder), theirs)
    answer = read_all(ours)
    ours.close()
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"refused" in answer.partition(b"\r\n\r\n")[2]
    assert dialer.calls == ["connect_now"]
    (record,) = recorder.records
    assert "refused" in record.outcome


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_rfc9110_9_3_6_tunnel_established_is_h11s_encoding(version: bytes) -> None:
    machine = h11.Connection(h11.SERVER)
    machine.receive_data(b"CONNECT example.org:443 HTTP/%s\r\nHost: x\r\n\r\nearly" % version)
    assert isinstance(machine.next_event(), h11.Request)
    assert isinstance(machine.next_event(), h11.EndOfMessage)
    assert machine.next_event() is h11.PAUSED
    assert tunnel_established(version) == machine.send(TUNNEL_ESTABLISHED)
    assert machine.trailing_data == (b"early", False)


def test_tunnel_established_leaves_other_versions_to_h11() -> None:
    assert tunnel_established(b"2.0") is None
    assert b"Connection: close" in (tunnel_established(b"1.0") or b"")
    assert tunnel_established(b"1.1") == b"HTTP/1.1 200 Connection Established\r\n\r\n"


async def test_http10_connect_gets_connection_close_in_its_200(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    ours, theirs = client_pair(f"CONNECT [::1]:{port} HTTP/1.0\r\n\r\n".encode(), close=True)
    with trio.fail_after(10):
        await serve_socket(plain_context(SpyDialer(PREFIX), recorder), theirs)
    answer = read_all(ours)
    ours.close()
    assert answer == b"HTTP/1.1 200 Connection Established\r\nConnection: close\r\n\r\n"


async def keep_alive_origin(stream: trio.SocketStream) -> None:
    """Answers RESPONSE to each request head until the proxy closes (keep-alive)."""
    buffer = b""
    with trio.fail_after(10):
        while True:
            buffer = await receive_head(stream, buffered=buffer, short_ok=True)
            if HEAD_END not in buffer:
                return
            buffer = buffer.partition(HEAD_END)[2]
            await stream.send_all(RESPONSE)


async def test_small_response_already_here_skips_h11_body_events_and_keeps_alive(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, keep_alive_origin, 0, host="::1"))
    port = listeners[0].socket.getsockname()[1]
    sent: list[str] = []
    real_send = h11.Connection.send

    def spying_send(self: h11.Connection, event: h11.Event) -> bytes | None:
        if self.our_role is h11.SERVER:  # what the client is sent
            sent.append(type(event).__name__)
        return real_send(self, event)

    monkeypatch.setattr(h11.Connection, "send", spying_send)
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    head = f"GET http://[::1]:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    ours, theirs = client_pair(head * 3, close=True)  # pipelined, then EOF
    with trio.fail_after(10):
        await serve_socket(plain_context(dialer, recorder), theirs)
    answer = read_all(ours)
    ours.close()
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3 and answer.endswith(b"\r\n\r\nhi")
    # each response: its head through h11, its 2-byte body written with it (RFC 9112 §6.3)
    assert sent == ["Response"] * 3
    assert dialer.calls == ["connect_now"]  # one origin connection, kept alive (§9.3)
    (record,) = recorder.records
    forwarded = f"GET / HTTP/1.1\r\nHost: [::1]:{port}\r\nVia: 1.1 proxy64\r\n\r\n"
    assert record.bytes_down == 3 * len(RESPONSE) and record.bytes_up == 3 * len(forwarded)


async def h11_origin(stream: trio.SocketStream, bodies: list[bytes]) -> None:
    """An origin framing with h11: records each request body, answers its length."""
    machine = h11.Connection(h11.SERVER)
    body = b""
    with trio.fail_after(10):
        while True:
            event = machine.next_event()
            if event is h11.NEED_DATA:
                machine.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                bodies.append(body)
                answer = str(len(body)).encode()
                body = b""
                length = str(len(answer)).encode()
                response = h11.Response(status_code=200, headers=[(b"Content-Length", length)])
                data = machine.send(response) or b""
                data += machine.send(h11.Data(data=answer)) or b""
                data += machine.send(h11.EndOfMessage()) or b""
                await stream.send_all(data)
                machine.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return


async def test_small_request_bodies_already_here_skip_h11_events_and_arrive_whole(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies: list[bytes] = []
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(h11_origin, bodies=bodies), 0, host="::1")
    )
    port = listeners[0].socket.getsockname()[1]
    sent: list[str] = []
    real_send = h11.Connection.send

    def spying_send(self: h11.Connection, event: h11.Event) -> bytes | None:
        if self.our_role is h11.CLIENT:  # what the origin is sent
            sent.append(type(event).__name__)
        return real_send(self, event)

    monkeypatch.setattr(h11.Connection, "send", spying_send)
    dialer, recorder = SpyDialer(PREFIX), ListRecorder()
    posts = [b"x" * 1000, b"", b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]  # the last one looks like a head
    data = b"".join(
        b"POST http://[::1]:%d/ HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
        % (port, len(body), body)
        for body in posts
    )
    ours, theirs = client_pair(data, close=True)
    with trio.fail_after(10):
        await serve_socket(plain_context(dialer, recorder), theirs)
    answer = read_all(ours)
    ours.close()
    assert bodies == posts  # RFC 9112 §6.3: exactly Content-Length bytes each, in order
    assert answer.count(b"HTTP/1.1 200 ") == 3 and answer.endswith(b"\r\n\r\n22")
    assert sent == ["Request"] * 3  # the bodies went with their heads, not as h11 events
    assert dialer.calls == ["connect_now"]
    (record,) = recorder.records
    assert record.outcome == "ok"
