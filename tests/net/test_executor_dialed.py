"""What the executor (net/executor.py) adds for a protocol that talks to its dialed stream
itself and keeps it across requests (HTTP forwarding): an `Await` step whose helper is
given the dialed stream (`Served.dialed_helpers`), and a `Finish` that ends the record
and closes that stream, so the machine can dial again on the same client connection.
A scripted machine over real loopback sockets behind a real ProxyServer and Dialer."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, ip_address
from typing import Any

import trio

from proxy64.config import HostPort
from proxy64.destination import Destination, Egress
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed
from proxy64.net.dialer import Dialer
from proxy64.net.executor import Served
from proxy64.net.listeners import Listening, ProxyServer, bind_listener, bound_address
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots
from proxy64.proto.session import (
    Await,
    Awaited,
    Close,
    Command,
    Connected,
    DataReceived,
    Dial,
    Event,
    Finish,
    Receive,
    Record,
    Send,
)
from tests.helpers.fakes import NSP, ListRecorder
from tests.helpers.fakes import CachedNameResolver as Resolver
from tests.helpers.socks_fronts import connect
from tests.helpers.streams import receive_all, receive_exactly


@dataclass(frozen=True, slots=True)
class Ask(Await):
    question: bytes


@dataclass(frozen=True, slots=True)
class Answered(Awaited):
    answer: bytes


@dataclass
class Script:
    """Per client line: dial the origin (again after each Finish), ask it, answer."""

    origin: Destination
    deadline: float = math.inf
    events: list[Event] = field(default_factory=list)

    def start(self, now: float) -> list[Command]:
        return [Receive()]

    def handle(self, event: Event, now: float) -> list[Command]:
        self.events.append(event)
        if isinstance(event, DataReceived):
            if not event.data:
                return [Close("client done")]
            return [Record("test", self.origin), Dial(self.origin)]
        if isinstance(event, Connected):
            return [Ask(b"question")]
        assert isinstance(event, Answered), event
        return [Send(event.answer), Finish("upstream done"), Receive()]


async def test_a_dialed_helper_talks_to_the_dialed_stream_and_finish_closes_it(
    nursery: trio.Nursery,
) -> None:
    accepted: list[int] = []
    closed = trio.Semaphore(0)

    async def origin(stream: trio.SocketStream) -> None:
        accepted.append(1)
        async with stream:
            data = await stream.receive_some(100)
            await stream.send_all(b"answer to " + data)
            assert await stream.receive_some(100) == b""  # the executor closed it
            closed.release()

    listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    given: list[Dialed] = []

    async def ask(
        command: Any,
        client: socket.socket,
        record: ConnectionRecord | None,
        ctx: ProxyContext,
        *,
        dialed: Dialed,
        stream: Callable[[], trio.SocketStream],
    ) -> Event | None:
        assert isinstance(command, Ask) and record is not None
        given.append(dialed)
        await dialed.stream.send_all(command.question)
        return Answered(bytes(await dialed.stream.receive_some(100)))

    hub = RelayHub()
    recorder = ListRecorder()
    ctx = ProxyContext(
        dialer=Dialer(Resolver(), NSP, Egress.EMBEDDED),
        recorder=recorder,
        relay=Relay(hub=hub),
        credentials=None,
        handshake_timeout=5.0,
        idle_timeout=30.0,
        connection_slots=ConnectionSlots(4),
        hub=hub,
    )
    destination = Destination(IPv4Address("127.0.0.1"), port)

    def sessions(ctx: ProxyContext, client: str, have_slot: bool) -> Script:
        return Script(destination)

    served = Served(
        "TEST", sessions, logging.getLogger("test.executor"), 4096, dialed_helpers={Ask: ask}
    )
    sock = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
    server = ProxyServer(ctx, [Listening(sock, served.opener())], grace=1.0)
    with trio.fail_after(10):
        await nursery.start(server.run)
        client = await connect(bound_address(sock).port)
        with client:
            for _ in range(2):  # a new dial each time: the first stream was closed
                await client.send(b"go")
                answer = b"answer to question"
                assert await receive_exactly(client, len(answer)) == answer
                await closed.acquire()
            client.shutdown(socket.SHUT_WR)
            assert await receive_all(client) == b""
        records = await recorder.wait_for(2)
        server.stop()
    assert len(accepted) == 2 and len(given) == 2 and given[0] is not given[1]
    assert [r.outcome for r in records] == ["upstream done", "upstream done"]
    assert all(r.bytes_up == 0 and r.destination == destination for r in records)
