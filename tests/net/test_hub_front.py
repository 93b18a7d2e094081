"""What the one executor (proxy64/net/executor.py) does for every protocol: the slot a
connection borrows, and the end of an owned tunnel the hub promoted to a task — at
shutdown, and when no task can be started for it. Driven through the HTTP proxy (its
CONNECT tunnel) on loopback, as the listener drives it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import trio

from proxy64.net.executor import SHUTDOWN_OUTCOME, ExecutorFront, borrow_slot
from proxy64.net.slots import ConnectionSlots
from tests.helpers.fakes import ListRecorder
from tests.helpers.hub_fronts import ESTABLISHED, Client, context, front_of, start_origin


def test_borrow_slot_lends_the_token_until_the_limit() -> None:
    recorder = ListRecorder()

    async def main() -> None:
        ctx = context(recorder, slots=ConnectionSlots(1))
        first, second = object(), object()
        assert borrow_slot(ctx, first, "127.0.0.1:1") is first
        assert borrow_slot(ctx, second, "127.0.0.2:1") is None  # all taken: refused
        ctx.connection_slots.release_on_behalf_of(first)
        assert borrow_slot(ctx, second, "127.0.0.2:1") is second
        assert ctx.connection_slots.borrowed_tokens == 1

    trio.run(main)


async def _promoted_tunnel(
    nursery: trio.Nursery, spawn: Callable[..., None], recorder: ListRecorder
) -> tuple[ExecutorFront, Client, ConnectionSlots]:
    """A CONNECT tunnel the hub carries, then promotes (past the splice threshold)."""
    port = await start_origin(nursery)
    ctx = context(recorder)
    spawned: list[object] = []

    def counting(async_fn: Callable[..., Any], *args: object) -> None:
        spawned.append(args[1])
        spawn(async_fn, *args)

    front = front_of(ctx, nursery, counting)
    client = Client(front)
    client.send(f"CONNECT [::1]:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await trio.sleep(0.01)
    client.hand_over()
    assert await client.read_exactly(len(ESTABLISHED)) == ESTABLISHED
    assert front.live == 1 and spawned == []
    payload = os.urandom(1024 * 1024)  # 4x the threshold; never read back: it stays busy
    sent = 0
    while front.live and not spawned and sent < len(payload):
        await trio.lowlevel.wait_writable(client.sock)
        try:
            sent += client.sock.send(payload[sent : sent + 65536])
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):  # ended at once (no task for it)
            break
    # promoted: a task holds it (or, when none can start, it ended at once)
    assert [getattr(f, "__name__", f) for f in spawned] == ["_relay_task"]
    return front, client, ctx.connection_slots


async def test_promoted_tunnel_cancelled_at_shutdown_is_recorded_so(
    nursery: trio.Nursery,
) -> None:
    recorder = ListRecorder()
    with trio.fail_after(10):
        async with trio.open_nursery() as tasks:

            def spawn(async_fn: Callable[..., Any], *args: object) -> None:
                tasks.start_soon(async_fn, *args)

            front, client, slots = await _promoted_tunnel(nursery, spawn, recorder)
            await trio.sleep(0.05)
            assert recorder.records == []  # the task holds it
            tasks.cancel_scope.cancel()  # shutdown out of grace
        (record,) = recorder.records
        client.close()
    assert record.outcome == SHUTDOWN_OUTCOME
    assert record.front_end == "http-connect" and record.bytes_up > 0
    assert slots.borrowed_tokens == 0 and front.live == 0


async def test_promoted_tunnel_without_a_task_ends_at_once(nursery: trio.Nursery) -> None:
    recorder = ListRecorder()

    def spawn(async_fn: Callable[..., Any], *args: object) -> None:
        raise RuntimeError("the nursery is closed")

    with trio.fail_after(10):
        front, client, slots = await _promoted_tunnel(nursery, spawn, recorder)
        (record,) = recorder.records  # ended in the hub callback itself
        client.sock.setblocking(True)
        client.sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while client.sock.recv(65536):  # its socket is closed: EOF (or a reset)
                pass
        client.close()
    assert record.outcome == "internal error in the HTTP front end (a bug in proxy64)"
    assert slots.borrowed_tokens == 0 and front.live == 0
