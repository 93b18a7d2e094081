"""Failed authentications slowed per address, against a real ProxyServer on loopback with
the SOCKS listener's executor and the HTTP front end: 50 wrong RFC 1929 passwords from
one address take at least the policy's delays while another address authenticates at
once; one log line per burst; HTTP 407 answers are held the same way."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address

import pytest
import trio

from proxy64.config import HostPort
from proxy64.destination import Egress
from proxy64.net.auth_gate import AuthGate
from proxy64.net.context import ProxyContext
from proxy64.net.dialer import Dialer
from proxy64.net.http_server import HTTP
from proxy64.net.listeners import Listening, ProxyServer, bind_listener, bound_address
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots
from proxy64.net.socks_server import SOCKS
from proxy64.proto.auth_delay import AuthDelay
from tests.helpers.fakes import NSP, ListRecorder
from tests.helpers.fakes import CachedNameResolver as Resolver
from tests.helpers.streams import receive_head

BASE, CAP = 0.02, 0.05
USERS = {"alice": "right"}


@asynccontextmanager
async def proxy(
    handshake_timeout: float = 10.0, base: float = BASE, cap: float = CAP
) -> AsyncIterator[tuple[int, int]]:
    hub = RelayHub()  # the server runs it; the front ends as app.py wires them
    ctx = ProxyContext(
        dialer=Dialer(Resolver(), NSP, Egress.EMBEDDED),
        recorder=ListRecorder(),
        relay=Relay(hub=hub),
        credentials=dict(USERS),
        handshake_timeout=handshake_timeout,
        idle_timeout=30.0,
        connection_slots=ConnectionSlots(200),
        auth_gate=AuthGate(AuthDelay(base=base, cap=cap, forget_after=30.0)),
        hub=hub,
    )
    socks = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
    http = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
    listening = [
        Listening(socks, SOCKS.opener()),
        Listening(http, HTTP.opener()),
    ]
    server = ProxyServer(ctx, listening, grace=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield bound_address(socks).port, bound_address(http).port
        server.stop()


async def connect_from(source: str, port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


async def recv_exactly(sock: trio.socket.SocketType, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := await sock.recv(n - len(data))):
        data += chunk
    return data


async def socks_auth(source: str, port: int, user: str, password: str) -> tuple[int, float]:
    """One RFC 1929 attempt: (status, seconds until the answer)."""
    sock = await connect_from(source, port)
    with sock:
        await sock.send(b"\x05\x01\x02")
        assert await recv_exactly(sock, 2) == b"\x05\x02"
        started = trio.current_time()
        name, secret = user.encode(), password.encode()
        await sock.send(b"\x01" + bytes([len(name)]) + name + bytes([len(secret)]) + secret)
        answer = await recv_exactly(sock, 2)
        return answer[1], trio.current_time() - started


def total_holds(failures: int) -> float:
    """What the policy holds in all for `failures` sequential wrong passwords."""
    policy = AuthDelay(base=BASE, cap=CAP, forget_after=30.0)
    now = 0.0
    for _ in range(failures):
        now += policy.answer("x", False, now).seconds
    return now


async def test_50_wrong_passwords_are_slowed_another_client_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy64.net.auth_gate")
    async with proxy() as (socks_port, _):
        other_latencies: list[float] = []
        guessing_done = trio.Event()

        async def other_client() -> None:
            while not guessing_done.is_set():
                status, took = await socks_auth("127.0.0.2", socks_port, "alice", "right")
                assert status == 0x00
                other_latencies.append(took)
                await trio.sleep(0.1)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other_client)
                started = trio.current_time()
                for _ in range(50):
                    status, _ = await socks_auth("127.0.0.1", socks_port, "alice", "guess")
                    assert status != 0x00
                took = trio.current_time() - started
                # a right password from the guessing address is held too (no quick "yes")
                status, held = await socks_auth("127.0.0.1", socks_port, "alice", "right")
                guessing_done.set()
        assert status == 0x00 and held >= CAP * 0.9
        assert took >= total_holds(50)  # 0 + 0.02 + 0.04 + 47 × 0.05 = 2.41 s
        assert other_latencies and max(other_latencies) < 0.5  # at once, whatever the guesser
    burst_lines = [r for r in caplog.records if "authentication failed from" in r.getMessage()]
    assert len(burst_lines) == 1 and "127.0.0.1" in burst_lines[0].getMessage()


async def test_http_407_answers_are_held_for_a_failing_address() -> None:
    async with proxy() as (_, http_port):
        wrong = base64.b64encode(b"alice:guess").decode()

        async def attempt() -> tuple[bytes, float]:
            sock = await connect_from("127.0.0.1", http_port)
            with sock:
                started = trio.current_time()
                await sock.send(
                    b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x\r\n"
                    b"Proxy-Authorization: Basic " + wrong.encode() + b"\r\n\r\n"
                )
                answer = await receive_head(sock, short_ok=True)
                return answer, trio.current_time() - started

        with trio.fail_after(20):
            took = []
            for _ in range(5):
                answer, seconds = await attempt()
                assert answer.startswith(b"HTTP/1.1 407 "), answer
                took.append(seconds)
        assert sum(took) >= total_holds(5)
        assert took[-1] >= CAP * 0.9


async def test_an_answer_due_after_the_handshake_deadline_is_a_failure_now() -> None:
    """Answers queued past the handshake time are failures at once (the right password
    too): a flood from one address gets refusals, never a late success or a SOCKS reply
    in place of the RFC 1929 status."""
    async with proxy(handshake_timeout=3.0, base=10.0, cap=10.0) as (socks_port, _):
        with trio.fail_after(10):
            status, _ = await socks_auth("127.0.0.1", socks_port, "alice", "guess")
            assert status == 0x01  # the first failure: at once
            status, took = await socks_auth("127.0.0.1", socks_port, "alice", "right")
        # due after 10 s, past the 3 s handshake deadline: refused now, not at the deadline
        assert status == 0x01 and took < 2.5
