"""The one executor (net/executor.py) with a scripted session machine, over real loopback
sockets behind a real ProxyServer, Dialer and relay hub: a Send that must wait for the
client to read, the machine's deadline (trio's mock clock), a dial in flight and a dial
awaited, linger, reset, an interruption, a protocol's Await helper, a bug that ends one
connection only, and shutdown. The protocol decisions are the script's: here only how
they are carried out is tested."""

from __future__ import annotations

import errno
import gc
import logging
import math
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
import trio

from proxy64.config import HostPort
from proxy64.destination import Destination, Egress
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import DialerLike
from proxy64.net.dialer import Dialer
from proxy64.net.executor import (
    SHUTDOWN_OUTCOME,
    AwaitHelper,
    Executor,
    ExecutorFront,
    Served,
    Wait,
)
from proxy64.net.listeners import Listening, ProxyServer, bind_listener, bound_address
from proxy64.net.relay import Relay
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots
from proxy64.proto.session import (
    Await,
    Awaited,
    ClientLost,
    Close,
    Command,
    Connected,
    DataReceived,
    Dial,
    DialFailed,
    Event,
    Receive,
    Record,
    Send,
    Tick,
)
from proxy64.proto.session import (
    Relay as RelayCommand,
)
from tests.helpers.fakes import NSP, UNCACHED, ListRecorder
from tests.helpers.fakes import CachedNameResolver as Resolver
from tests.helpers.origins import backlogged, serve_tcp_echo
from tests.helpers.socks_fronts import Spawns, connect, echo_once
from tests.helpers.streams import receive_all, receive_exactly

Rule = Callable[["Scripted", Event, float], list[Command]]


@dataclass
class Scripted:
    """A session machine whose decisions are given: `first` at start, then `rule`."""

    first: list[Command]
    rule: Rule
    deadline: float = math.inf
    events: list[Event] = field(default_factory=list)

    def start(self, now: float) -> list[Command]:
        return list(self.first)

    def handle(self, event: Event, now: float) -> list[Command]:
        self.events.append(event)
        return self.rule(self, event, now)


@dataclass
class Harness:
    port: int
    server: ProxyServer
    front: ExecutorFront
    recorder: ListRecorder
    machines: list[Scripted]


@asynccontextmanager
async def serving(
    script: Callable[[], Scripted],
    *,
    helpers: Mapping[type[Await], AwaitHelper] | None = None,
    grace: float = 1.0,
    connect_timeout: float = 5.0,
    dialer: DialerLike | None = None,
    slots: int = 1,
) -> AsyncIterator[Harness]:
    """A ProxyServer whose listener's executor runs script() per client (a client
    without a slot gets a machine that closes with "no slot")."""
    hub = RelayHub()
    recorder = ListRecorder()
    ctx = ProxyContext(
        dialer=dialer or Dialer(Resolver(), NSP, Egress.EMBEDDED, connect_timeout=connect_timeout),
        recorder=recorder,
        relay=Relay(idle_timeout=30.0, hub=hub),
        credentials=None,
        handshake_timeout=5.0,
        idle_timeout=30.0,
        connection_slots=ConnectionSlots(slots),
        hub=hub,
    )
    machines: list[Scripted] = []

    def sessions(ctx: ProxyContext, client: str, have_slot: bool) -> Scripted:
        machine = script() if have_slot else Scripted([Close("no slot")], closing("?"))
        machines.append(machine)
        return machine

    served = Served("TEST", sessions, logging.getLogger("test.executor"), 4096, helpers or {})
    sock = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
    server = ProxyServer(ctx, [Listening(sock, served.opener())], grace=grace)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        front = server.fronts[0]
        assert isinstance(front, ExecutorFront)
        yield Harness(bound_address(sock).port, server, front, recorder, machines)
        server.stop()


def closing(outcome: str, **linger: Any) -> Rule:
    return lambda machine, event, now: [Close(outcome, **linger)]


# --- Send ------------------------------------------------------------------------------


async def test_a_send_the_client_does_not_read_waits_in_the_hub_in_order() -> None:
    """8 MiB cannot be written at once: the rest waits for writability (no task), then
    the next Send and the Close follow in order."""
    big = bytes(range(256)) * (8 * 4096)
    spawns = Spawns()
    script: list[Command] = [Record("t"), Send(big), Send(b"after"), Close("sent")]
    with trio.fail_after(20):
        async with serving(lambda: Scripted(script, closing("?"))) as h:
            trio.lowlevel.add_instrument(spawns)
            client = await connect(h.port)
            with client:
                await trio.sleep(0.1)
                (held,) = h.front.connections
                assert held.wait is Wait.WRITE  # the premise: the write would block
                assert await receive_all(client) == big + b"after"
            (record,) = await h.recorder.wait_for(1)
            trio.lowlevel.remove_instrument(spawns)
    assert spawns.proxy64() == []
    assert (record.front_end, record.outcome) == ("t", "sent")


async def test_a_client_socket_has_nagle_off_from_its_listener(nursery: trio.Nursery) -> None:
    """Small replies (a SOCKS reply, a tunnel's keystrokes) go out at once: the accepted
    socket inherits TCP_NODELAY from the listener, with no setsockopt per connection."""

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        return [Close("eof")]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t"), Send(b"hi"), Receive()], rule)) as h:
            client = await connect(h.port)
            with client:
                assert await receive_exactly(client, 2) == b"hi"
                (executor,) = h.front.connections
                assert executor.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                client.shutdown(socket.SHUT_WR)
                await h.recorder.wait_for(1)


async def test_a_client_that_reset_is_fed_client_lost() -> None:
    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        if isinstance(event, DataReceived):
            return [Send(b"x" * (4 << 20)), Close("all sent")]
        assert isinstance(event, ClientLost)
        return [Close(event.reason)]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t"), Receive()], rule)) as h:
            client = await connect(h.port)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            await client.send(b"go")
            await trio.sleep(0.1)
            client.close()  # unread data: an RST
            (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "client reset the connection"


# --- Receive and the deadline ------------------------------------------------------------


async def test_receive_feeds_each_read_and_eof(nursery: trio.Nursery) -> None:
    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        assert isinstance(event, DataReceived)
        if not event.data:
            return [Send(b"bye"), Close("eof")]
        return [Send(event.data.upper()), Receive()]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t"), Receive()], rule)) as h:
            client = await connect(h.port)
            with client:
                for word in (b"one", b"two"):
                    await client.send(word)
                    assert await receive_exactly(client, 3) == word.upper()
                client.shutdown(socket.SHUT_WR)
                assert await receive_all(client) == b"bye"
            (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "eof"
    assert h.machines[0].events[-1] == DataReceived(b"")


class _CountingOs:
    """The os module as executor_client sees it, counting the reads that found nothing."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.empty_reads = 0

    def read(self, fd: int, size: int) -> bytes:
        try:
            data: bytes = self.real.read(fd, size)
        except BlockingIOError:
            self.empty_reads += 1
            raise
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_receive_after_an_answer_waits_for_readability_without_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Receive(answered=True): the client was answered outside a Send (a forwarded
    response), so a read before its socket is readable would find nothing; the executor
    waits in the hub instead, and what the client sends next is still fed."""
    import proxy64.net.executor_client as executor_client

    counting = _CountingOs(os)
    monkeypatch.setattr(executor_client, "os", counting)
    before_answer: list[int] = []

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        assert isinstance(event, DataReceived)
        if event.data == b"ask":
            before_answer.append(counting.empty_reads)
            return [Receive(answered=True)]
        return [Send(event.data.upper()), Close("done")]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t"), Receive()], rule)) as h:
            client = await connect(h.port)
            with client:
                await client.send(b"ask")
                await trio.sleep(0.1)
                (executor,) = h.front.connections
                assert executor.wait is Wait.READ  # waiting in the hub, not reading
                await client.send(b"next")
                assert await receive_all(client) == b"NEXT"
            (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "done"
    assert counting.empty_reads == before_answer[0]  # no read that found nothing since


async def test_the_machines_deadline_is_a_tick_on_the_hubs_timer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """On trio's mock clock: a silent client; a Tick before the deadline (the machine moved
    it later) is answered with nothing, the one at the deadline closes."""
    ticks: list[float] = []

    def script() -> Scripted:
        machine = Scripted([Record("t"), Receive()], rule)
        machine.deadline = trio.current_time() + 30
        return machine

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        assert isinstance(event, Tick)
        ticks.append(now)
        if len(ticks) == 1:
            machine.deadline = now + 15
            return []
        machine.deadline = math.inf
        return [Send(b"late"), Close("timed out")]

    with trio.fail_after(600):
        async with serving(script) as h:
            started = trio.current_time()
            client = await connect(h.port)
            with client:
                assert await receive_all(client) == b"late"
            (record,) = await h.recorder.wait_for(1)
    assert [round(t - started) for t in ticks] == [30, 45]
    assert record.outcome == "timed out"


async def test_a_tick_while_a_send_waits_replaces_what_is_queued() -> None:
    """The client never reads: at the deadline the machine's new commands replace the rest
    of the blocked Send and the queued Close."""

    def script() -> Scripted:
        machine = Scripted([Record("t"), Send(b"x" * (16 << 20)), Close("never")], rule)
        machine.deadline = trio.current_time() + 0.3
        return machine

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        assert isinstance(event, Tick)
        machine.deadline = math.inf
        return [Close("not read in time")]

    with trio.fail_after(10):
        async with serving(script) as h:
            client = await connect(h.port)
            with client:
                (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "not read in time"


# --- Dial ----------------------------------------------------------------------------


def dialing(destination: Destination) -> Callable[[], Scripted]:
    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        if isinstance(event, Connected):
            assert event.local is not None  # the Dial asked for the bound address
            return [Send(b"ok " + str(event.local[0]).encode() + b"\n"), RelayCommand(b"early")]
        assert isinstance(event, DialFailed)
        return [Send(b"no\n"), Close(str(event.error))]

    return lambda: Scripted([Record("t", destination), Dial(destination, bound_address=True)], rule)


async def test_dial_completing_inside_connect_relays_in_the_hub(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    spawns = Spawns()
    with trio.fail_after(10):
        async with serving(dialing(Destination(IPv4Address("127.0.0.1"), echo))) as h:
            trio.lowlevel.add_instrument(spawns)
            client = await connect(h.port)
            with client:
                assert await receive_exactly(client, 13) == b"ok 127.0.0.1\n"
                assert await receive_exactly(client, 5) == b"early"  # to the origin first
                await echo_once(client, b"ping")
            (record,) = await h.recorder.wait_for(1)
            trio.lowlevel.remove_instrument(spawns)
    assert spawns.proxy64() == []
    assert (record.bytes_up, record.bytes_down, record.outcome) == (9, 9, "ok")


async def test_a_dial_that_does_not_ask_for_the_bound_address_is_connected_without_it(
    nursery: trio.Nursery,
) -> None:
    """The outbound socket's own address costs a getsockname(2): only a Dial that asks
    (SOCKS BND.ADDR) gets it in Connected."""
    echo = await nursery.start(serve_tcp_echo)
    origin = Destination(IPv4Address("127.0.0.1"), echo)

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        assert event == Connected(None)
        return [Send(b"ok\n"), RelayCommand(b"")]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t", origin), Dial(origin)], rule)) as h:
            client = await connect(h.port)
            with client:
                assert await receive_exactly(client, 3) == b"ok\n"
                await echo_once(client, b"ping")
            (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "ok"
    assert h.machines[0].events[0] == Connected(None)


async def test_dial_in_flight_is_watched_in_the_hub(nursery: trio.Nursery) -> None:
    spawns = Spawns()
    with backlogged() as origin, trio.fail_after(10):
        async with serving(dialing(Destination(IPv6Address("::1"), origin.port))) as h:
            trio.lowlevel.add_instrument(spawns)
            client = await connect(h.port)
            with client:
                await trio.sleep(0.1)
                (held,) = h.front.connections
                assert held.wait is Wait.DIAL  # the premise: connect(2) in flight
                await client.send(b"+meanwhile")  # waits in the kernel for the tunnel
                await trio.sleep(0.05)
                assert held.wait is Wait.DIAL and held.registered == 0  # watch ended
                nursery.start_soon(origin.serve_echo)
                assert await receive_exactly(client, 7) == b"ok ::1\n"
                assert await receive_exactly(client, 15) == b"early+meanwhile"
            (record,) = await h.recorder.wait_for(1)
            trio.lowlevel.remove_instrument(spawns)
    assert spawns.proxy64() == []
    assert record.outcome == "ok"


async def test_dial_in_flight_past_its_deadline_is_fed_dial_failed() -> None:
    with backlogged() as origin, trio.fail_after(10):
        destination = Destination(IPv6Address("::1"), origin.port)
        async with serving(dialing(destination), connect_timeout=0.3) as h:
            client = await connect(h.port)
            with client:
                assert await receive_all(client) == b"no\n"
            (record,) = await h.recorder.wait_for(1)
    assert "timed out" in record.outcome


async def test_dial_that_must_be_awaited_takes_one_task_then_the_hub(
    nursery: trio.Nursery,
) -> None:
    echo = await nursery.start(serve_tcp_echo)
    spawns = Spawns()
    with trio.fail_after(10):
        async with serving(dialing(Destination(UNCACHED, echo))) as h:
            trio.lowlevel.add_instrument(spawns)
            client = await connect(h.port)
            with client:
                assert await receive_exactly(client, 13) == b"ok 127.0.0.1\n"
                assert await receive_exactly(client, 5) == b"early"
                await echo_once(client, b"pong")
            (record,) = await h.recorder.wait_for(1)
            trio.lowlevel.remove_instrument(spawns)
    assert spawns.proxy64() == ["proxy64.net.listeners.ProxyServer._run_spawned"]
    assert record.outcome == "ok"


# --- Close -------------------------------------------------------------------------------


async def test_linger_drains_what_the_client_sends_then_closes() -> None:
    """The refusal is read by a client whose unread bytes would otherwise turn the close
    into an RST; draining stops at linger_bytes."""
    script: list[Command] = [Record("t"), Receive()]

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        return [Send(b"refused"), Close("refused", linger=True, linger_time=5.0, linger_bytes=64)]

    with trio.fail_after(10):
        async with serving(lambda: Scripted(script, rule)) as h:
            client = await connect(h.port)
            with client:
                await client.send(b"request")
                await trio.sleep(0.05)
                await client.send(b"x" * 32)  # after our FIN: drained, no RST
                assert await receive_exactly(client, 7) == b"refused"
                assert await client.recv(10) == b""  # our FIN
                (held,) = h.front.connections
                assert held.wait is Wait.LINGER
                await client.send(b"y" * 64)  # past linger_bytes: closed
                (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "refused"


async def test_linger_ends_at_its_time(autojump_clock: trio.abc.Clock) -> None:
    script: list[Command] = [
        Record("t"),
        Close("refused", linger=True, linger_time=7.0, linger_bytes=64),
    ]
    with trio.fail_after(60):
        async with serving(lambda: Scripted(script, closing("?"))) as h:
            client = await connect(h.port)
            with client:
                started = trio.current_time()
                assert await client.recv(10) == b""
                (record,) = await h.recorder.wait_for(1)
                assert trio.current_time() - started == pytest.approx(7.0, abs=0.5)
    assert record.outcome == "refused"


async def test_reset_closes_with_an_rst() -> None:
    script: list[Command] = [Record("t"), Receive()]

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        return [Close("cut", reset=True)]

    with trio.fail_after(10):
        async with serving(lambda: Scripted(script, rule)) as h:
            client = await connect(h.port)
            with client:
                await client.send(b"x")
                with pytest.raises(OSError) as raised:
                    while await client.recv(10):
                        pass
                assert raised.value.errno == errno.ECONNRESET
            (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "cut"


# --- a protocol's Await step ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask(Await):
    question: bytes


@dataclass(frozen=True, slots=True)
class Answered(Awaited):
    answer: bytes


async def test_an_await_helper_runs_in_a_task_and_its_result_is_fed_back() -> None:
    async def helper(
        command: Any, client: trio.SocketStream, record: ConnectionRecord | None, ctx: ProxyContext
    ) -> Event | None:
        assert isinstance(command, Ask)
        await client.send_all(command.question)
        return Answered(await client.receive_some(100))

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        if isinstance(event, DataReceived):
            return [Ask(b"name? ")]
        assert isinstance(event, Answered)
        return (
            [Send(b"hello " + event.answer), Receive()]
            if event.answer != b"bye"
            else [Close("done")]
        )

    with trio.fail_after(10):
        async with serving(
            lambda: Scripted([Record("t"), Receive()], rule), helpers={Ask: helper}
        ) as h:
            client = await connect(h.port)
            with client:
                for name in (b"alice", b"bob"):
                    await client.send(b"hi")
                    assert await receive_exactly(client, 6) == b"name? "
                    await client.send(name)
                    assert await receive_exactly(client, 6 + len(name)) == b"hello " + name
                await client.send(b"hi")
                assert await receive_exactly(client, 6) == b"name? "
                await client.send(b"bye")
                assert await receive_all(client) == b""
            (record,) = await h.recorder.wait_for(1)
    assert record.outcome == "done"


# --- bugs and shutdown ----------------------------------------------------------------------


async def test_a_bug_in_the_machine_ends_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("broken once")
        return [Send(b"fine"), Close("ok")]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t"), Receive()], rule)) as h:
            for expected in (b"", b"fine"):  # one slot: the first came back
                client = await connect(h.port)
                with client:
                    await client.send(b"x")
                    assert await receive_all(client) == expected
            records = await h.recorder.wait_for(2)
    assert [r.outcome for r in records] == ["internal error: RuntimeError('broken once')", "ok"]
    assert "TEST front end failed for 127.0.0.1:" in caplog.text


async def test_a_command_of_no_known_kind_is_a_bug_that_ends_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Commands are carried out by their type (a protocol's Await subclass by Await's
    entry, as Ask above): one of no session command's type ends its connection only."""

    @dataclass(frozen=True)
    class Odd:
        what: str

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        if event == DataReceived(b"odd"):
            return [Odd("x")]  # type: ignore[list-item]
        return [Send(b"fine"), Close("ok")]

    with trio.fail_after(10):
        async with serving(lambda: Scripted([Record("t"), Receive()], rule)) as h:
            for sent, expected in ((b"odd", b""), (b"x", b"fine")):  # one slot: it came back
                client = await connect(h.port)
                with client:
                    await client.send(sent)
                    assert await receive_all(client) == expected
            records = await h.recorder.wait_for(2)
    assert [r.outcome for r in records] == [
        'internal error: TypeError("not a session command: ' + repr(Odd("x")) + '")',
        "ok",
    ]
    assert "TEST front end failed for 127.0.0.1:" in caplog.text


async def test_shutdown_ends_hub_and_task_held_connections_after_grace() -> None:
    never = Destination(IPv6Address("::1"), 9)

    class Hang:
        """connect_now gives way; connect never finishes."""

        def connect_now(self, destination: Destination, client: str = "") -> None:
            return None

        async def connect(self, destination: Destination, client: str = "") -> Any:
            await trio.sleep_forever()

    def script() -> Scripted:
        return Scripted([Record("t"), Receive()], rule)

    def rule(machine: Scripted, event: Event, now: float) -> list[Command]:
        return [Dial(never)] if event == DataReceived(b"dial") else [Receive()]

    with trio.fail_after(10):
        async with serving(script, grace=0.3, dialer=Hang(), slots=2) as h:  # type: ignore[arg-type]
            reading, dialing_ = await connect(h.port), await connect(h.port)
            await dialing_.send(b"dial")
            await trio.sleep(0.1)
            assert sorted(e.wait.value for e in h.front.connections) == ["read", "task"]
            h.server.stop()
            with reading, dialing_:
                assert await receive_all(reading) == b""
                assert await receive_all(dialing_) == b""
            records = await h.recorder.wait_for(2)
            assert h.front.live == 0
    assert [r.outcome for r in records] == [SHUTDOWN_OUTCOME] * 2


async def test_an_ended_connection_is_freed_without_the_cyclic_gc(
    nursery: trio.Nursery,
) -> None:
    """No reference cycle keeps an ended executor (its timer, watch, tunnel and tasks all
    let go of it): with the collector off, none is left after its connection ends."""
    echo = await nursery.start(serve_tcp_echo)
    gc.collect()
    gc.disable()
    try:
        with trio.fail_after(10):
            async with serving(dialing(Destination(UNCACHED, echo)), slots=4) as h:
                for _ in range(3):
                    client = await connect(h.port)
                    with client:
                        assert await receive_exactly(client, 13) == b"ok 127.0.0.1\n"
                        assert await receive_exactly(client, 5) == b"early"
                        await echo_once(client, b"x")
                await h.recorder.wait_for(3)
                await trio.sleep(0.05)  # the tasks that held them have returned
                left = [o for o in gc.get_objects() if isinstance(o, Executor)]
    finally:
        gc.enable()
    assert left == []
