"""The SOCKS listener (the one executor, net/executor.py, with proto/socks_session.py)
behind a real ProxyServer, real Dialer and Relay, on loopback: what it serves without any
proxy64 task, what takes one, and its replies, outcomes, time limits, capacity and
shutdown.

A trio Instrument records every task spawned; "no task" means no task whose name starts
with "proxy64." (the test's own origins and clients are not proxy64 code). Clients use
raw trio sockets (no open_tcp_stream: it spawns attempt tasks of its own).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import socket
import weakref
from collections.abc import Callable
from ipaddress import IPv4Address, ip_address
from typing import Any

import pytest
import trio

from proxy64.config import HostPort
from proxy64.defaults import RELAY_IDLE_SLACK
from proxy64.destination import Destination, Egress, Reached
from proxy64.net.listeners import bind_listener, bound_address
from proxy64.proto.socks_session import SocksSession
from tests.helpers.cycles import cyclic_garbage
from tests.helpers.fakes import CACHED, UNCACHED
from tests.helpers.flaky_listener import FlakyListener
from tests.helpers.hub import running_hub
from tests.helpers.origins import pattern_bytes, serve_tcp_echo, serve_tcp_hash
from tests.helpers.socks5_client import connect_request, socks5_handshake
from tests.helpers.socks_fronts import NOAUTH, Spawns, connect, echo_once, proxy
from tests.helpers.streams import closed_port, receive_all, receive_exactly


async def socks5(port: int, request: bytes) -> trio.socket.SocketType:
    client = await connect(port)
    reply = await socks5_handshake(client, request)
    assert reply[:4] == b"\x05\x00\x00\x01", reply
    return client


# --- served without a task ----------------------------------------------------------------


async def test_rfc1928_ipv4_literal_is_served_without_any_proxy64_task(
    nursery: trio.Nursery,
) -> None:
    echo = await nursery.start(serve_tcp_echo)
    spawns = Spawns()
    with trio.fail_after(10):
        async with proxy() as p:
            trio.lowlevel.add_instrument(spawns)
            try:
                client = await socks5(p.port, connect_request("127.0.0.1", echo))
                with client:
                    await echo_once(client, b"ping")
                    client.shutdown(socket.SHUT_WR)
                    assert await receive_all(client) == b""
                (record,) = await p.recorder.wait_for(1)
            finally:
                trio.lowlevel.remove_instrument(spawns)
            assert spawns.proxy64() == []
            assert (p.front.live, p.server.live) == (0, 0)
    assert record.front_end == "socks5"
    assert record.destination == Destination(IPv4Address("127.0.0.1"), echo)
    assert record.reached is Reached.IPV4_LITERAL
    assert record.egress is Egress.EMBEDDED
    assert (record.bytes_up, record.bytes_down, record.outcome) == (4, 4, "ok")


async def test_cached_name_is_served_without_any_proxy64_task(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    spawns = Spawns()
    with trio.fail_after(10):
        async with proxy() as p:
            trio.lowlevel.add_instrument(spawns)
            try:
                client = await socks5(p.port, connect_request(CACHED, echo))
                with client:
                    await echo_once(client, b"hello")
                (record,) = await p.recorder.wait_for(1)
            finally:
                trio.lowlevel.remove_instrument(spawns)
            assert spawns.proxy64() == []
            assert p.resolver.resolved == []  # never awaited the resolver
    assert record.destination == Destination(CACHED, echo)
    assert record.reached is Reached.DNS64
    assert record.outcome == "ok"


async def test_uncached_name_is_awaited_in_one_task_and_works(
    nursery: trio.Nursery,
) -> None:
    echo = await nursery.start(serve_tcp_echo)
    spawns = Spawns()
    with trio.fail_after(10):
        async with proxy() as p:
            trio.lowlevel.add_instrument(spawns)
            try:
                client = await socks5(p.port, connect_request(UNCACHED, echo))
                with client:
                    await echo_once(client, b"over a task")
                (record,) = await p.recorder.wait_for(1)
            finally:
                trio.lowlevel.remove_instrument(spawns)
            assert p.resolver.resolved == [UNCACHED]
    # the instrument does see proxy64's tasks: the "no task" assertions above mean something
    assert spawns.proxy64() == ["proxy64.net.listeners.ProxyServer._run_spawned"]
    assert record.reached is Reached.DNS64
    assert (record.bytes_up, record.outcome) == (11, "ok")


async def test_unknown_name_gets_host_unreachable(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        async with proxy() as p:
            client = await connect(p.port)
            with client:
                await client.send(NOAUTH + connect_request("nowhere.p64.test", 80))
                assert await receive_all(client) == b"\x05\x00" + bytes(
                    [5, 4, 0, 1, 0, 0, 0, 0, 0, 0]
                )  # RFC 1928 §6: host unreachable
            (record,) = await p.recorder.wait_for(1)
    assert "NXDOMAIN" in record.outcome


async def test_socks4_and_early_data_in_one_segment(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    with trio.fail_after(10):
        async with proxy() as p:
            client = await connect(p.port)
            with client:
                request = b"\x04\x01" + echo.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + b"u\0"
                await client.send(request + b"early bytes")
                reply = await receive_exactly(client, 8)
                assert reply[:2] == b"\x00\x5a"
                assert await receive_exactly(client, 11) == b"early bytes"
            (record,) = await p.recorder.wait_for(1)
    assert record.front_end == "socks4"
    assert record.bytes_up == 11


async def test_bulk_tunnel_is_promoted_and_keeps_every_byte(nursery: trio.Nursery) -> None:
    """Past the splice threshold the owned tunnel leaves the hub for a task (relay's task
    path): sha256 both ways, half-close passed on."""
    port = await nursery.start(serve_tcp_hash, "127.0.0.1", 3 * 1024 * 1024)
    blob = pattern_bytes(5 * 1024 * 1024, seed=7)
    with trio.fail_after(60):
        async with proxy() as p:
            client = await socks5(p.port, connect_request("127.0.0.1", port))
            with client:
                view = memoryview(blob)
                while view:
                    view = view[await client.send(view[: 256 * 1024]) :]
                client.shutdown(socket.SHUT_WR)
                answer = await receive_all(client)
            (record,) = await p.recorder.wait_for(1)
    assert answer[:32] == hashlib.sha256(blob).digest()
    assert answer[32:] == pattern_bytes(3 * 1024 * 1024)
    assert (record.bytes_up, record.bytes_down) == (len(blob), len(answer))
    assert record.outcome == "ok"


# --- time limits ----------------------------------------------------------------------------


async def test_slowloris_greeting_times_out_with_the_rfc1928_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    """On trio's mock clock: both clients are cut at the handshake deadline itself."""
    with trio.fail_after(600):
        async with proxy(handshake_timeout=30) as p:
            silent = await connect(p.port)
            partial = await connect(p.port)
            with silent, partial:
                await partial.send(b"\x05")  # half a greeting, then nothing
                started = trio.current_time()
                assert await receive_all(partial) == b"\x05\xff"  # RFC 1928 §3
                assert await receive_all(silent) == b""
                assert trio.current_time() - started == pytest.approx(30, abs=1)
            records = await p.recorder.wait_for(2)
    assert [r.outcome for r in records] == ["SOCKS handshake not finished within 30 s"] * 2


async def test_idle_owned_tunnel_is_closed_after_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """On trio's mock clock: activity every 200 s keeps a 300 s idle timeout away; after
    the last byte the hub closes the tunnel 300 s later (its timers run on trio's clock)."""
    echo = await nursery.start(serve_tcp_echo)
    with trio.fail_after(3600):
        async with proxy(idle_timeout=300) as p:
            client = await socks5(p.port, connect_request("127.0.0.1", echo))
            with client:
                for _ in range(3):  # activity pushes the deadline
                    await trio.sleep(200)
                    await echo_once(client, b"x")
                started = trio.current_time()
                assert await receive_all(client) == b""
                assert 300 <= trio.current_time() - started <= 300 + RELAY_IDLE_SLACK + 1
            (record,) = await p.recorder.wait_for(1)
    assert record.outcome == "idle for 300 s, closed"
    assert record.bytes_up == 3


# --- bad and vanishing clients, auth, capacity, shutdown ------------------------------------


async def test_garbage_greeting_is_closed_and_the_server_keeps_serving(
    nursery: trio.Nursery,
) -> None:
    echo = await nursery.start(serve_tcp_echo)
    with trio.fail_after(10):
        async with proxy() as p:
            bad = await connect(p.port)
            with bad:
                await bad.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert await receive_all(bad) == b""  # not SOCKS: no bytes back
            good = await socks5(p.port, connect_request("127.0.0.1", echo))
            with good:
                await echo_once(good, b"still serving")
            records = await p.recorder.wait_for(2)
    assert records[0].outcome.startswith("not a SOCKS client: the first byte is 0x47")
    assert records[1].outcome == "ok"


async def test_client_vanishing_mid_handshake_is_recorded() -> None:
    with trio.fail_after(10):
        async with proxy() as p:
            client = await connect(p.port)
            with client:
                await client.send(b"\x05\x02")
                client.shutdown(socket.SHUT_WR)
                assert await receive_all(client) == b"\x05\xff"
            (record,) = await p.recorder.wait_for(1)
    assert record.outcome == (
        "client closed the connection in the middle of its SOCKS5 greeting (2 bytes received)"
    )


async def test_rfc1929_success_on_the_fast_path_and_failure(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    creds = {"alice": "s3cret"}

    def auth(user: bytes, password: bytes) -> bytes:
        return b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password

    spawns = Spawns()
    with trio.fail_after(10):
        async with proxy(credentials=creds) as p:
            trio.lowlevel.add_instrument(spawns)
            ok = await connect(p.port)
            with ok:
                await ok.send(
                    b"\x05\x01\x02" + auth(b"alice", b"s3cret") + connect_request("127.0.0.1", echo)
                )
                assert await receive_exactly(ok, 4) == b"\x05\x02\x01\x00"
                assert (await receive_exactly(ok, 10))[:2] == b"\x05\x00"
                await echo_once(ok, b"in")
            denied = await connect(p.port)
            with denied:
                await denied.send(b"\x05\x01\x02" + auth(b"alice", b"wrong"))
                assert await receive_all(denied) == b"\x05\x02\x01\x01"
            records = await p.recorder.wait_for(2)
            trio.lowlevel.remove_instrument(spawns)
    assert spawns.proxy64() == []  # the refusal lingers in the hub too
    assert records[0].outcome == "ok"
    assert records[1].outcome == "authentication failed for user 'alice' (RFC 1929)"


async def test_max_connections_refuses_with_0x01(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    with trio.fail_after(10):
        async with proxy(max_connections=1) as p:
            first = await socks5(p.port, connect_request("127.0.0.1", echo))
            with first:
                second = await connect(p.port)
                with second:
                    await second.send(NOAUTH + connect_request("127.0.0.1", echo))
                    reply = await receive_all(second)
                assert reply[:2] == b"\x05\x00" and reply[2:4] == b"\x05\x01"
                await echo_once(first, b"first still works")
            records = await p.recorder.wait_for(2)
    assert records[0].outcome == "too many connections (--max-connections 1)"
    assert records[1].outcome == "ok"


async def test_shutdown_ends_open_owned_tunnels_after_grace(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    with trio.fail_after(10):
        async with proxy(grace=0.3) as p:
            tunnel = await socks5(p.port, connect_request("127.0.0.1", echo))
            handshaking = await connect(p.port)
            await handshaking.send(b"\x05")
            await echo_once(tunnel, b"open")
            assert p.front.live == 2
            p.server.stop()
            with tunnel, handshaking:
                assert await receive_all(tunnel) == b""
                assert await receive_all(handshaking) == b""
            records = await p.recorder.wait_for(2)
            assert p.front.live == 0
    assert sorted(r.outcome for r in records) == ["cancelled (proxy64 is shutting down)"] * 2


# --- accepting through the hub --------------------------------------------------------------


async def test_failed_accept_backs_off_then_accepting_resumes() -> None:
    from proxy64.net.listeners import accept_in_hub

    accepted: list[object] = []
    got_one = trio.Event()

    class Front:
        live = 0

        def accepted(self, sock: socket.socket, address: object) -> None:
            accepted.append(address)
            got_one.set()
            sock.close()

        async def drain(self) -> None:
            pass

    listener = bind_listener(HostPort(ip_address("127.0.0.1"), 0))
    flaky = FlakyListener(listener, errno.EMFILE)
    with listener, trio.fail_after(10):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            nursery.start_soon(accept_in_hub, hub, flaky.as_socket(), Front())
            client = await connect(bound_address(listener).port)
            await got_one.wait()  # EMFILE first: ACCEPT_BACKOFF (0.1 s), then the client
            client.close()
            nursery.cancel_scope.cancel()
    assert len(flaky.calls) >= 2 and len(accepted) == 1


async def test_a_bug_in_a_hub_callback_ends_only_that_connection(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxy64.proto.socks_session as socks_session
    from proxy64.proto.socks_dispatch import handshake_step as real

    echo = await nursery.start(serve_tcp_echo)
    calls: list[int] = []

    def broken_once(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("broken once")
        return real(*args)

    # patched where the session looks it up (its module imported the name)
    monkeypatch.setattr(socks_session, "handshake_step", broken_once)
    with trio.fail_after(10):
        async with proxy(max_connections=1) as p:
            bad = await connect(p.port)
            with bad:
                await bad.send(NOAUTH)
                assert await receive_all(bad) == b""
            good = await socks5(
                p.port, connect_request("127.0.0.1", echo)
            )  # the one slot came back
            with good:
                await echo_once(good, b"fine")
            records = await p.recorder.wait_for(2)
    assert records[0].outcome == "internal error: RuntimeError('broken once')"
    assert records[1].outcome == "ok"


async def test_a_connection_that_left_is_not_kept_by_its_pending_timer(
    nursery: trio.Nursery,
) -> None:
    """The handshake deadline (5 s) is still pending when the tunnel ends: the hub's timer
    entry is cancelled, so the finished connection and its machine are freed at once."""
    echo = await nursery.start(serve_tcp_echo)
    with trio.fail_after(10):
        async with proxy(handshake_timeout=5.0) as p:
            client = await connect(p.port)
            with client:
                await client.send(NOAUTH[:2])  # half a greeting: watched, timer set
                await trio.sleep(0.05)
                (held,) = p.front.connections
                assert isinstance(held.machine, SocksSession) and held.machine.machine is not None
                machine = weakref.ref(held.machine.machine)
                del held
                await client.send(NOAUTH[2:])
                assert await receive_exactly(client, 2) == b"\x05\x00"
                await client.send(connect_request("127.0.0.1", echo))
                assert (await receive_exactly(client, 10))[:2] == b"\x05\x00"
                await echo_once(client, b"ping")
            await p.recorder.wait_for(1)
            gc.collect()
            assert machine() is None  # freed before its 5 s deadline fired


async def test_finished_socks4_and_socks5_connections_leave_no_cyclic_garbage(
    nursery: trio.Nursery,
) -> None:
    """Every object of an ended SOCKS4 or SOCKS5 connection (session, protocol machine,
    executor, tunnel, record) is freed by reference counting: with the collector off during
    the connections, a collection afterwards finds no proxy64 object in a cycle."""
    echo = await nursery.start(serve_tcp_echo)
    socks4 = b"\x04\x01" + echo.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + b"u\0"
    with trio.fail_after(10):
        async with proxy() as p:
            client = await socks5(p.port, connect_request("127.0.0.1", echo))  # warm-up
            with client:
                await echo_once(client, b"warm")
            await p.recorder.wait_for(1)
            with cyclic_garbage() as cyclic:
                for _ in range(3):
                    client = await socks5(p.port, connect_request("127.0.0.1", echo))
                    with client:
                        await echo_once(client, b"ping")
                    client = await connect(p.port)
                    with client:
                        await client.send(socks4)
                        assert (await receive_exactly(client, 8))[:2] == b"\x00\x5a"
                        await echo_once(client, b"ping")
                await p.recorder.wait_for(7)
                await trio.sleep(0.05)  # the hub has seen every close
    assert cyclic == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(lambda: b"\x09garbage", id="garbage-greeting"),
        pytest.param(
            lambda: NOAUTH + connect_request("::1", closed_port("::1")), id="refused-dial"
        ),
        pytest.param(
            lambda: NOAUTH + connect_request("nowhere.p64.test", 80), id="nxdomain-in-a-task"
        ),
        pytest.param(
            lambda: b"\x04\x01" + closed_port().to_bytes(2, "big") + bytes([127, 0, 0, 1]) + b"u\0",
            id="socks4-refused-dial",
        ),
    ],
)
async def test_refused_connections_leave_no_cyclic_garbage(
    request_bytes: Callable[[], bytes],
) -> None:
    """A refusal keeps no error in a frame its own traceback holds (error -> traceback ->
    frame -> error pulls the executor and its machines into a cycle)."""
    with trio.fail_after(10):
        async with proxy() as p:
            warm = await connect(p.port)
            with warm:
                await warm.send(request_bytes())
                await receive_all(warm)
            await p.recorder.wait_for(1)
            with cyclic_garbage() as cyclic:
                for _ in range(3):
                    client = await connect(p.port)
                    with client:
                        await client.send(request_bytes())
                        await receive_all(client)
                await p.recorder.wait_for(4)
                await trio.sleep(0.05)  # the tasks that held them have returned
    assert cyclic == []
