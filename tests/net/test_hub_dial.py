"""A connect(2) still in flight when the handshake ends (every dial on a real network) is
waited for in the relay hub, not in a task: the SOCKS reply or HTTP 200 is written from
the hub once the socket is writable and the connection becomes a hub tunnel; a dial that
fails or passes its deadline there gets the same refusal as every other dial failure.

The premise without a namespace: a loopback listener whose accept queue is full drops
new SYNs, so connect() returns EINPROGRESS and completes only after accept() makes room
and the SYN is sent again (about 1 s later). Each test checks that its dial really was in
flight (the connection is seen in Stage.DIALING, the SOCKS executor in Wait.DIAL) before
it lets the dial complete.
"""

from __future__ import annotations

import select
import socket
from ipaddress import IPv6Address
from typing import Any

import pytest
import trio

from proxy64.destination import Destination, Egress
from proxy64.errors import DialAttempt, DialCause, DialError
from proxy64.net.dial_types import PendingDial
from proxy64.net.dialer import Dialer
from proxy64.net.executor import Executor, ExecutorFront, Wait
from proxy64.net.metrics import MeteredDialer, Metrics
from proxy64.net.resolver import Resolution
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.fakes import ListRecorder
from tests.helpers.hub_fronts import ESTABLISHED, Client, context, open_front
from tests.helpers.metric_samples import samples
from tests.helpers.origins import backlogged
from tests.helpers.socks_fronts import NOAUTH, Spawns, connect, echo_once, proxy
from tests.helpers.streams import receive_all, receive_exactly


def connect_v6(port: int) -> bytes:
    return b"\x05\x01\x00\x04" + IPv6Address("::1").packed + port.to_bytes(2, "big")


async def test_socks5_dial_in_flight_completes_in_the_hub_without_a_task(
    nursery: trio.Nursery,
) -> None:
    spawns = Spawns()
    with backlogged() as origin, trio.fail_after(10):
        async with proxy() as p:
            trio.lowlevel.add_instrument(spawns)
            try:
                client = await connect(p.port)
                with client:
                    await client.send(NOAUTH + connect_v6(origin.port))
                    assert await receive_exactly(client, 2) == b"\x05\x00"
                    await trio.sleep(0.1)
                    (held,) = p.front.connections
                    assert held.wait is Wait.DIAL  # the premise: still in flight
                    nursery.start_soon(origin.serve_echo)
                    reply = await receive_exactly(client, 22)
                    assert reply[:4] == b"\x05\x00\x00\x04", reply  # RFC 1928 §6 succeeded
                    await echo_once(client, b"after the wait")
                    client.shutdown(socket.SHUT_WR)
                    assert await receive_all(client) == b""
                (record,) = await p.recorder.wait_for(1)
            finally:
                trio.lowlevel.remove_instrument(spawns)
            assert spawns.proxy64() == []
            assert (p.front.live, p.server.live) == (0, 0)
    assert record.destination == Destination(IPv6Address("::1"), origin.port)
    assert (record.bytes_up, record.bytes_down, record.outcome) == (14, 14, "ok")


async def test_socks5_dial_in_flight_past_its_deadline_is_refused_as_any_timeout() -> None:
    with backlogged() as origin, trio.fail_after(10):
        async with proxy(connect_timeout=0.3) as p:
            client = await connect(p.port)
            with client:
                await client.send(NOAUTH + connect_v6(origin.port))
                assert await receive_exactly(client, 2) == b"\x05\x00"
                await trio.sleep(0.1)
                (held,) = p.front.connections
                assert held.wait is Wait.DIAL
                answer = await receive_all(client)
            (record,) = await p.recorder.wait_for(1)
    destination = Destination(IPv6Address("::1"), origin.port)
    attempt = DialAttempt(IPv6Address("::1"), origin.port, DialCause.TIMEOUT, "timed out")
    expected = DialError(str(destination), [attempt])
    assert answer == b"\x05" + bytes([expected.socks_reply]) + b"\x00\x01" + bytes(6)
    assert record.outcome == str(expected)


async def dialing(front: ExecutorFront, request_line: str) -> tuple[Client, Executor]:
    """A client whose request (to a backlogged origin) front has taken, and its connection,
    seen with its dial still in flight (the premise of each test here)."""
    client = Client(front)
    client.send(f"{request_line}\r\nHost: x\r\n\r\n".encode())
    await trio.sleep(0.01)
    client.hand_over()
    await trio.sleep(0.1)
    (held,) = front.connections
    assert held.wait is Wait.DIAL  # the premise: still in flight
    return client, held


async def test_http_connect_in_flight_completes_in_the_hub_without_a_task(
    nursery: trio.Nursery,
) -> None:
    recorder = ListRecorder()
    with backlogged() as origin:
        tasks: list[str] = []
        front = open_front(context(recorder), nursery, tasks)
        with trio.fail_after(10):
            client, _ = await dialing(front, f"CONNECT [::1]:{origin.port} HTTP/1.1")
            nursery.start_soon(origin.serve_echo)
            assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
            assert tasks == []
            client.send(b"ping")
            assert await client.read_exactly(4) == b"ping"
            client.sock.shutdown(socket.SHUT_WR)
            assert await client.read_to_eof() == b""
        client.close()
        (record,) = await recorder.wait_for(1)
    assert (record.front_end, record.outcome) == ("http-connect", "ok")
    assert (record.bytes_up, record.bytes_down) == (4, 4)
    assert tasks == [] and front.live == 0


class _CountingEpoll:
    """The hub's epoll set, recording each epoll_ctl as (operation, fd, events)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[str, int, int]] = []

    def register(self, fd: int, events: int) -> None:
        self.calls.append(("add", fd, events))
        self.real.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.calls.append(("mod", fd, events))
        self.real.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.calls.append(("del", fd, 0))
        self.real.unregister(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_http_forwarding_over_a_dial_in_flight_waits_for_the_answer_with_one_mod(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dial is watched for writability; once it completes, the request is written and
    the wait for the origin's answer takes the dial's registration over (one MOD, not a
    DEL and an ADD); the response comes back from the hub, no task involved."""
    recorder = ListRecorder()
    ctx = context(recorder)
    assert ctx.hub is not None
    epoll = _CountingEpoll(ctx.hub._epoll)
    monkeypatch.setattr(ctx.hub, "_epoll", epoll)  # a stand-in, not a select.epoll
    with backlogged() as origin:
        tasks: list[str] = []
        front = open_front(ctx, nursery, tasks)
        with trio.fail_after(10):
            client, held = await dialing(front, f"GET http://[::1]:{origin.port}/x HTTP/1.1")
            assert held.pending is not None
            dialed_fd = held.pending.sock.fileno()
            nursery.start_soon(origin.serve_http_once, b"hi")
            answer = b""
            while not answer.endswith(b"\r\n\r\nhi"):
                answer += await client.read_exactly(1)
            client.sock.shutdown(socket.SHUT_WR)
            assert await client.read_to_eof() == b""
        client.close()
        (record,) = await recorder.wait_for(1)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert (record.front_end, record.outcome) == ("http", "ok")
    assert tasks == [] and front.live == 0
    on_dialed = [(op, events) for op, fd, events in epoll.calls if fd == dialed_fd]
    assert on_dialed[:2] == [("add", select.EPOLLOUT), ("mod", select.EPOLLIN)], on_dialed


async def test_metered_dialer_times_dials_the_hub_finishes_and_abandons() -> None:
    """The metrics wrapper sees the in-hub completions: finish_now() and abandon()."""
    metrics = Metrics()
    dialer = MeteredDialer(
        Dialer(OneName(), Nat64Prefix.parse("64:ff9b::/96"), Egress.NAT64),
        metrics,
        connect_timeout=10.0,
    )
    with backlogged() as origin, trio.fail_after(10):
        destination = Destination(IPv6Address("::1"), origin.port)
        late = dialer.connect_now(destination)
        assert isinstance(late, PendingDial)  # the premise: in flight
        abandoned = dialer.connect_now(destination)
        assert isinstance(abandoned, PendingDial)
        error = dialer.abandon(abandoned)
        assert isinstance(error, DialError) and error.attempts[0].cause is DialCause.TIMEOUT
        async with trio.open_nursery() as nursery:
            nursery.start_soon(origin.serve_echo)
            await trio.lowlevel.wait_writable(late.sock)
            dialed = dialer.finish_now(late)
            await dialed.stream.send_all(b"x")
            assert await dialed.stream.receive_some(1) == b"x"
            await dialed.stream.aclose()
    got = samples(metrics)
    assert got["proxy64_dial_duration_seconds_count", (("outcome", "connected"),)] == 1
    assert got["proxy64_dial_duration_seconds_count", (("outcome", "failed"),)] == 1


class OneName:
    """A resolver that is never asked (the destinations here are literals)."""

    def resolve_cached(self, name: str) -> Resolution | None:
        raise AssertionError(name)

    async def resolve(self, name: str) -> Resolution:
        raise AssertionError(name)
