"""The HTTP proxy's executor front (net/executor.py with net/http_server.HTTP): a
CONNECT, its refusals and its lingering close are carried out in the relay hub without a
task; a forwarded request's exchange is the one task. Real sockets on loopback; the front
is driven as the listener drives it (accepted(sock, address) with a freshly accepted
blocking socket)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import os
import socket
import time
import weakref
from ipaddress import IPv6Address
from typing import Any

import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination, Egress
from proxy64.net.context import ConnectionRecord
from proxy64.net.dialer import Dialer
from proxy64.net.slots import ConnectionSlots
from proxy64.proto.session import NOTHING_SENT
from tests.helpers.fakes import ListRecorder
from tests.helpers.hub_fronts import (
    ESTABLISHED,
    PREFIX,
    Client,
    LoopbackResolver,
    context,
    open_front,
    start_origin,
)
from tests.helpers.streams import receive_head


async def one_record(recorder: ListRecorder) -> ConnectionRecord:
    with trio.fail_after(5):
        await recorder.wait_for(1)
    await trio.sleep(0.05)
    (record,) = recorder.records
    return record


async def test_rfc9110_9_3_6_connect_served_without_a_task(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    ctx = context(recorder)
    tasks: list[str] = []
    front = open_front(ctx, nursery, tasks)
    client = Client(front)
    client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with trio.fail_after(10):
        await trio.sleep(0.01)  # the head is in the socket before the front sees it
        client.hand_over()
        assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        assert front.live == 1 and tasks == []
        (held,) = front.connections  # small writes of the tunnel are not delayed (Nagle)
        assert held.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client.send(b"ping")
        assert await client.read_exactly(4) == b"ping"
        client.sock.shutdown(socket.SHUT_WR)
        assert await client.read_to_eof() == b""
    client.close()
    record = await one_record(recorder)
    assert (record.front_end, record.outcome) == ("http-connect", "ok")
    assert record.destination == Destination(IPv6Address("::1"), port)
    assert (record.bytes_up, record.bytes_down) == (4, 4)
    assert tasks == [] and front.live == 0
    assert ctx.connection_slots.borrowed_tokens == 0


async def test_an_open_tunnel_keeps_no_session_machine(nursery: trio.Nursery) -> None:
    """An idle tunnel costs its sockets and the hub's entry, not the handshake's parser
    and buffers: once Relay is carried out, the session machine (and its h11 machine) is
    freed while the tunnel stays open."""
    port = await start_origin(nursery)
    recorder = ListRecorder()
    front = open_front(context(recorder), nursery, [])
    client = Client(front)
    with trio.fail_after(10):
        client.hand_over()  # nothing sent yet: the machine waits for the head
        (held,) = front.connections
        machine = weakref.ref(held.machine)
        assert machine() is not None
        client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        client.send(b"ping")
        assert await client.read_exactly(4) == b"ping"  # the tunnel is open and working
        assert front.live == 1
        assert machine() is None
        client.sock.shutdown(socket.SHUT_WR)
        assert await client.read_to_eof() == b""
    client.close()
    record = await one_record(recorder)
    assert record.outcome == "ok" and (record.bytes_up, record.bytes_down) == (4, 4)


async def test_head_in_pieces_is_waited_for_by_the_hub(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    tasks: list[str] = []
    front = open_front(context(recorder), nursery, tasks)
    client = Client(front)
    head = f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with trio.fail_after(10):
        client.hand_over()  # nothing sent yet: the hub watches the socket
        for i in range(len(head)):  # one byte at a time
            client.send(head[i : i + 1])
            await trio.sleep(0.001)
        assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        client.close()
    record = await one_record(recorder)
    assert record.outcome == "ok" and tasks == []


async def test_early_bytes_go_first_then_the_hub_tunnel(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    tasks: list[str] = []
    front = open_front(context(recorder), nursery, tasks)
    client = Client(front)
    client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\nearly".encode())
    with trio.fail_after(10):
        await trio.sleep(0.01)
        client.hand_over()
        assert await client.read_exactly(len(ESTABLISHED) + 5) == ESTABLISHED + b"early"
        client.sock.shutdown(socket.SHUT_WR)
        assert await client.read_to_eof() == b""
    client.close()
    record = await one_record(recorder)
    assert record.outcome == "ok" and record.bytes_up == 5 and tasks == []


async def test_bulk_tunnel_promoted_to_the_task_path_intact(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    front = open_front(context(recorder), nursery)
    client = Client(front)
    client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    payload = os.urandom(3 * 1024 * 1024)  # past the splice threshold: promoted
    with trio.fail_after(20):
        await trio.sleep(0.01)
        client.hand_over()
        assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        echoed = b""
        view = memoryview(payload)
        while view or len(echoed) < len(payload):
            if view:
                with contextlib.suppress(BlockingIOError):
                    view = view[client.sock.send(view[: 1 << 16]) :]
            try:
                echoed += client.sock.recv(1 << 20)
            except BlockingIOError:
                await trio.lowlevel.checkpoint()
        client.sock.shutdown(socket.SHUT_WR)
        assert await client.read_to_eof() == b""
    client.close()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    record = await one_record(recorder)
    assert record.outcome == "ok"
    assert record.bytes_up == record.bytes_down == len(payload)


async def test_owned_tunnel_idle_timeout(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    ctx = context(recorder, idle_timeout=0.3)
    front = open_front(ctx, nursery)
    client = Client(front)
    client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with trio.fail_after(10):
        await trio.sleep(0.01)
        client.hand_over()
        assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        assert await client.read_to_eof() == b""  # closed by the idle timeout
    client.close()
    record = await one_record(recorder)
    assert record.outcome == "idle for 0.3 s, closed"
    assert ctx.connection_slots.borrowed_tokens == 0


@pytest.mark.parametrize(
    ("head", "status", "said"),
    [
        (b"CONNECT [::1] HTTP/1.1\r\nHost: x\r\n\r\n", b"400", b"CONNECT needs host:port"),
        (b"CONNECT [::1]:PORT HTTP/1.1\r\n\r\n", b"400", b"not valid HTTP/1.1"),  # no Host
        (b"CONNECT [::1]:1 HTTP/1.1\r\nHost: x\r\n\r\n", b"502", b"refused"),
        (b"CONNECT 10.1.2.3:80 HTTP/1.1\r\nHost: x\r\n\r\n", b"403", b"--strict-wkp"),
        # RFC 9110 §15.6.6: h11 parses HTTP/1.2, but a CONNECT is only 1.0 or 1.1
        (b"CONNECT [::1]:PORT HTTP/1.2\r\nHost: x\r\n\r\n", b"505", b"HTTP/1.2 is not"),
    ],
)
async def test_refusals_answered_and_lingered_in_the_hub(
    nursery: trio.Nursery, head: bytes, status: bytes, said: bytes
) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    tasks: list[str] = []
    front = open_front(context(recorder), nursery, tasks)
    client = Client(front)
    client.send(head.replace(b"PORT", str(port).encode()))
    with trio.fail_after(10):
        await trio.sleep(0.01)
        client.hand_over()
        client.sock.shutdown(socket.SHUT_WR)
        answer = await client.read_to_eof()
    client.close()
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer
    assert said in answer and b"Connection: close" in answer
    record = await one_record(recorder)
    assert record.outcome != "ok" and tasks == []


async def test_forwarding_exchange_waits_for_the_origin_without_a_task(
    nursery: trio.Nursery,
) -> None:
    async def origin(stream: trio.SocketStream) -> None:
        with trio.fail_after(10):
            await receive_head(stream)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    port = await start_origin(nursery, origin)
    recorder = ListRecorder()
    tasks: list[str] = []
    front = open_front(context(recorder), nursery, tasks)
    client = Client(front)
    client.send(f"GET http://[::1]:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with trio.fail_after(10):
        await trio.sleep(0.01)
        client.hand_over()
        client.sock.shutdown(socket.SHUT_WR)
        answer = await client.read_to_eof()
    client.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhi")
    assert b"Via: 1.1 proxy64" in answer
    record = await one_record(recorder)
    assert (record.front_end, record.outcome) == ("http", "ok")
    # a literal connected inside connect(2); the exchange waits for the origin in the hub
    assert tasks == []


async def test_proxy_auth_checked_before_the_tunnel(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    tasks: list[str] = []
    front = open_front(context(recorder, credentials={"u": "p"}), nursery, tasks)
    refused, accepted = Client(front), Client(front)
    head = f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n".encode()
    refused.send(head + b"\r\n")
    accepted.send(head + b"Proxy-Authorization: Basic dTpw\r\n\r\n")  # u:p
    with trio.fail_after(10):
        await trio.sleep(0.01)
        refused.hand_over()
        accepted.hand_over()
        assert await accepted.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        refused.sock.shutdown(socket.SHUT_WR)
        answer = await refused.read_to_eof()
    refused.close()
    accepted.close()
    assert answer.startswith(b"HTTP/1.1 407 ") and b'Basic realm="proxy64"' in answer
    assert tasks == []


async def test_head_deadline_408_and_silent_close(nursery: trio.Nursery) -> None:
    recorder = ListRecorder()
    ctx = context(recorder, handshake_timeout=0.3)
    front = open_front(ctx, nursery)
    partial, silent = Client(front), Client(front)
    partial.send(b"CONNECT [::1]:80 HTTP/1.1\r\nHo")
    with trio.fail_after(10):
        await trio.sleep(0.01)
        began = time.monotonic()
        partial.hand_over()
        silent.hand_over()
        answer = await partial.read_to_eof()
        assert await silent.read_to_eof() == b""  # nothing was sent: nothing to answer
    partial.close()  # ends the lingering close after the 408 (RFC 9112 §9.6)
    silent.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"not complete after 0.3 s" in answer
    for _ in range(200):  # the lingering close notices the client's close
        if ctx.connection_slots.borrowed_tokens == 0:
            break
        await trio.sleep(0.01)
    assert ctx.connection_slots.borrowed_tokens == 0 and front.live == 0
    # each connection has its one log line: what the 408 said, and why the other closed;
    # their durations cover the wait for the head
    assert sorted(r.outcome for r in recorder.records) == [
        "no request within 0.3 s",
        "the request head was not complete after 0.3 s",
    ]
    assert all(r.started - began < 0.2 for r in recorder.records)  # not when they ended


async def test_client_closing_before_a_head_ends_quietly_with_its_log_line(
    nursery: trio.Nursery,
) -> None:
    recorder = ListRecorder()
    ctx = context(recorder)
    front = open_front(ctx, nursery)
    client = Client(front)
    client.hand_over()
    client.close()
    with trio.fail_after(5):
        await front.drain()  # returns once the hub has seen the EOF and ended it
    assert [r.outcome for r in recorder.records] == [NOTHING_SENT] and front.live == 0
    assert ctx.connection_slots.borrowed_tokens == 0


async def test_no_slot_left_is_503(nursery: trio.Nursery) -> None:
    recorder = ListRecorder()
    slots = ConnectionSlots(1)
    slots.acquire_on_behalf_of_nowait("someone else")
    front = open_front(context(recorder, slots=slots), nursery)
    client = Client(front)
    client.send(b"CONNECT [::1]:80 HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(10):
        await trio.sleep(0.01)
        client.hand_over()
        client.sock.shutdown(socket.SHUT_WR)
        answer = await client.read_to_eof()
    client.close()
    assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
    assert slots.borrowed_tokens == 1


async def test_drain_waits_then_ends_what_is_left(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    front = open_front(context(recorder), nursery)
    client = Client(front)
    client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await trio.sleep(0.01)
    client.hand_over()
    with trio.fail_after(10):
        assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        with trio.move_on_after(0.2):
            await front.drain()  # the tunnel is open: drain waits ...
        assert front.live == 0  # ... and ends it when cancelled
        assert await client.read_to_eof() == b""
    client.close()
    record = await one_record(recorder)
    assert record.outcome == "cancelled (proxy64 is shutting down)"


async def test_rfc9110_9_3_6_connect_body_dropped(nursery: trio.Nursery) -> None:
    port = await start_origin(nursery)
    recorder = ListRecorder()
    tasks: list[str] = []
    front = open_front(context(recorder), nursery, tasks)
    client = Client(front)
    head = f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n".encode()
    client.send(head + b"abcping")  # "abc" is the CONNECT's (meaningless) content
    with trio.fail_after(10):
        await trio.sleep(0.01)
        client.hand_over()
        assert await client.read_exactly(len(ESTABLISHED) + 4) == ESTABLISHED + b"ping"
        client.sock.shutdown(socket.SHUT_WR)
        assert await client.read_to_eof() == b""
    client.close()
    record = await one_record(recorder)
    assert record.outcome == "ok" and record.bytes_up == 4 and tasks == []


class EchoDialer(Dialer):
    """Every destination is dialed as the test's echo origin (the real connect paths)."""

    def __init__(self, port: int) -> None:
        super().__init__(LoopbackResolver(), PREFIX, Egress.NAT64, connect_timeout=5.0)
        self.port = port

    def connect_now(self, destination: Destination, client: str = "") -> Any:
        return super().connect_now(Destination(IPv6Address("::1"), self.port))

    async def connect(self, destination: Destination, client: str = "") -> Any:
        return await super().connect(Destination(IPv6Address("::1"), self.port))


FUZZ_PIECES = st.sampled_from(
    [
        b"CONNECT ",
        b"GET ",
        b"a.test",
        b"[::1]",
        b"10.1.2.3",
        b":443",
        b":0",
        b"http://",
        b"/",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: a\r\n",
        b"\r\n",
        b"Content-Length: 2\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Proxy-Authorization: Basic dTpw\r\n",
        b"early",
        b"\x00\xff",
    ]
)
DECLARED = {200, 400, 403, 407, 408, 431, 501, 502, 505}


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.lists(FUZZ_PIECES, max_size=20).map(b"".join), st.binary(max_size=120)),
    st.booleans(),
)
@example(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\n\r\nearly", False)
@example(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: a\r\n\r\n", False)
@example(b"CONNECT [::1]:443 HTTP/1.0\r\n\r\n", False)
@example(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: a\r\nProxy-Authorization: Basic dTpw\r\n\r\n", True)
async def test_fuzz_front_answers_only_declared_statuses_and_ends_cleanly(
    data: bytes, auth: bool
) -> None:
    recorder = ListRecorder()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_origin(nursery)
            ctx = context(recorder, handshake_timeout=0.5, credentials={"u": "p"} if auth else None)
            ctx = dataclasses.replace(ctx, dialer=EchoDialer(port))
            front = open_front(ctx, nursery)
            client = Client(front)
            client.send(data)
            client.sock.shutdown(socket.SHUT_WR)
            client.hand_over()
            answer = await client.read_to_eof()
            client.close()
            await front.drain()
            for _ in range(300):  # a task (if any) notices the close on its next read
                if ctx.connection_slots.borrowed_tokens == 0:
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert ctx.connection_slots.borrowed_tokens == 0
    if answer:
        status = answer.split(b" ", 2)[1]
        assert answer.startswith(b"HTTP/1.1 ") and int(status) in DECLARED, answer
    assert all(r.outcome != "open" for r in recorder.records)


async def test_a_bug_ends_only_its_connection(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxy64.proto.http_session as http_session
    from proxy64.proto.httpproxy import classify as real_classify

    port = await start_origin(nursery)
    recorder = ListRecorder()
    ctx = context(recorder)
    front = open_front(ctx, nursery)
    calls: list[bytes] = []

    def classify_once_broken(request: Any) -> Any:
        calls.append(request.target)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real_classify(request)

    # patched where the session looks it up (its module imported the name)
    monkeypatch.setattr(http_session, "classify", classify_once_broken)
    head = f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    broken, fine = Client(front), Client(front)
    with trio.fail_after(10):
        broken.hand_over()  # nothing there yet: the hub watches it
        broken.send(head)
        assert await broken.read_to_eof() == b""  # closed, nothing half-said
        fine.send(head)
        await trio.sleep(0.01)
        fine.hand_over()
        assert await fine.read_exactly(len(ESTABLISHED)) == ESTABLISHED
        fine.close()
        broken.close()
        record = await one_record(recorder)  # the good tunnel's only
    assert record.outcome == "ok" and len(calls) == 2
    assert ctx.connection_slots.borrowed_tokens == 0 and front.live == 0


async def test_a_connection_that_left_is_not_kept_by_its_pending_timer(
    nursery: trio.Nursery,
) -> None:
    async def origin(stream: trio.SocketStream) -> None:
        with trio.fail_after(10):
            await receive_head(stream)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    port = await start_origin(nursery, origin)
    recorder = ListRecorder()
    front = open_front(context(recorder), nursery)  # a 5 s head deadline: still pending
    client = Client(front)
    with trio.fail_after(10):
        client.hand_over()  # no head yet: watched, with a timer for the head's deadline
        (held,) = front.connections
        machine = weakref.ref(held.machine)
        del held
        client.send(f"GET http://[::1]:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        client.sock.shutdown(socket.SHUT_WR)
        assert (await client.read_to_eof()).endswith(b"\r\n\r\nhi")
        await one_record(recorder)
    client.close()
    gc.collect()
    assert machine() is None  # its pending head-deadline timer was cancelled when it left
