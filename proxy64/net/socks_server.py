"""The SOCKS front end's per-connection handler: a thin loop around the proto machines.

One listener serves SOCKS5 (RFC 1928/1929) and SOCKS4/4a; the first byte picks the machine
(proto/socks_dispatch.py). The loop reads, feeds the machine, asks the shared dialer,
sends the reply the machine builds, forwards bytes the client sent early, then hands both
streams to the relay. It never parses a byte itself.

Invariants:
- ctx.recorder.finish(record) is called exactly once per accepted connection.
- Nothing escapes the handler: a peer's garbage becomes its protocol's error reply (or a
  clean close when it speaks no SOCKS), a vanished client a closed connection, a slow one
  a timeout after ctx.handshake_timeout.
- Over --max-connections the client still gets an answer it can show: the handshake runs
  (bounded by the handshake timeout) and the request is refused with 0x01 / 0x5B.
- The per-connection path is lean: handshake bytes are read and written on the
  client's raw fd, waiting (a trip through trio's scheduler) only when a call would block;
  sockets are closed synchronously, once. The relay reads the same fd: nothing is buffered
  in a SocketStream, so no byte is lost between the handshake and the relay.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv4Address

import trio

from proxy64.defaults import SOCKS_HANDSHAKE_READ, SOCKS_LINGER_BYTES, SOCKS_LINGER_TIME
from proxy64.errors import Proxy64Error, RemoteProtocolError, SocksReply
from proxy64.net.auth_gate import auth_hold
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.dial_types import Dialed, IPAddress, PendingDial
from proxy64.net.hub_front import borrow_slot, client_text
from proxy64.net.outcomes import client_lost
from proxy64.net.relay import close_stream, write_fd_all
from proxy64.net.socks_udp import serve_udp_association
from proxy64.proto.socks4 import Socks4Reply, Socks4Request
from proxy64.proto.socks5 import NEED_DATA, Command, Reply, Request, Socks5Server
from proxy64.proto.socks_dispatch import (
    Closed,
    Held,
    SocksMachine,
    handshake_step,
    machine_for,
)

logger = logging.getLogger(__name__)

NO_BIND: tuple[IPAddress, int] = (IPv4Address(0), 0)
RFC1929_FAILURE = bytes([0x01, 0x01])  # RFC 1929 §2: VER 1, a non-zero STATUS


class _Closed(Exception):
    """The client closed (or refused a method) before a request: the outcome says why."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the hub-driven front end (socks_front.py) hands a connection to this task path:
    the machine with what it has consumed, bytes owed to the client (sent first), the
    handshake deadline, and either the error to refuse with, the request to serve (with
    its dial already started, or done), or neither (the handshake goes on from here)."""

    machine: SocksMachine | None  # None: the client has sent nothing yet
    deadline: float
    unsent: bytes = b""
    error: RemoteProtocolError | Closed | Held | None = None
    request: Request | Socks4Request | None = None
    pending: PendingDial | None = None  # the dial started without waiting: finish it
    dialed: Dialed | None = None  # the dial is done: reply, early bytes, relay
    dial_error: Proxy64Error | None = None  # the dial failed without waiting: reply it
    replied: bool = False  # the success reply is (in) unsent already


def peer_text(stream: trio.SocketStream) -> str:
    try:
        return client_text(stream.socket.getpeername(), "?")
    except OSError:
        return "?"


async def handle_socks_client(stream: trio.SocketStream, ctx: ProxyContext) -> None:
    """One connection on the task path. A listener with the hub-driven front end
    (socks_front.py, wired by app.py) serves what it can without a task and resumes the
    rest here."""
    record = ConnectionRecord(front_end="socks5", client=peer_text(stream))
    slot = borrow_slot(ctx, object(), record.client)  # a new token: the borrower
    await serve_connection(stream, ctx, record, slot, None)


async def serve_connection(
    stream: trio.SocketStream,
    ctx: ProxyContext,
    record: ConnectionRecord,
    slot: object | None,
    resume: Resume | None,
) -> None:
    """Serve one connection to its end; the record is finished, the slot released."""
    try:
        await _serve(stream, ctx, record, slot is not None, resume)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if record.outcome == "open":
            record.outcome = client_lost(exc)
    except Exception as exc:
        logger.exception("SOCKS handler failed for %s (a bug in proxy64)", record.client)
        record.outcome = f"internal error: {exc!r}"
    finally:
        finish_connection(ctx, record, slot)
        stream.socket.close()  # idempotent, never blocks: no checkpoint needed


def finish_connection(ctx: ProxyContext, record: ConnectionRecord, slot: object | None) -> None:
    """The one end of every connection: slot back, outcome set, one record line."""
    if slot is not None:
        ctx.connection_slots.release_on_behalf_of(slot)
    if record.outcome == "open":
        record.outcome = "cancelled (proxy64 is shutting down)"
    ctx.recorder.finish(record)


def handshake_timed_out(ctx: ProxyContext) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"SOCKS handshake not finished within {ctx.handshake_timeout:g} s",
        socks_reply=SocksReply.TTL_EXPIRED,
    )


def too_many(ctx: ProxyContext, client: str) -> RemoteProtocolError:
    return RemoteProtocolError(ctx.connection_slots.refusal(client))


async def _serve(
    stream: trio.SocketStream,
    ctx: ProxyContext,
    record: ConnectionRecord,
    have_slot: bool,
    resume: Resume | None,
) -> None:
    machine: SocksMachine | None = None
    request: Request | Socks4Request | None = None
    deadline = trio.current_time() + ctx.handshake_timeout
    if resume is not None:
        machine, request, deadline = resume.machine, resume.request, resume.deadline
    try:
        with trio.fail_at(deadline):
            if resume is not None:
                if resume.unsent:
                    await send_raw(stream, resume.unsent)
                if isinstance(resume.error, Held):
                    await send_held(stream, resume.error, deadline)
                elif isinstance(resume.error, Closed):
                    raise _Closed(resume.error.reason)
                elif resume.error is not None:
                    raise resume.error
            if request is None:
                if machine is None:
                    first = await receive_raw(stream)
                    if not first:
                        raise _Closed("client closed the connection without sending anything")
                    machine = machine_for(first[0], require_auth=ctx.credentials is not None)
                    record.front_end = machine.front_end
                    machine.receive_data(first)
                request = await _handshake(stream, machine, ctx, record.client, deadline)
    except _Closed as closed:
        record.outcome = str(closed)
        await _linger(stream)  # after a 0xFF method or an RFC 1929 failure status
        return
    except trio.TooSlowError:
        await _refuse(stream, machine, record, handshake_timed_out(ctx))
        return
    except RemoteProtocolError as error:
        await _refuse(stream, machine, record, error)
        return

    udp = isinstance(request, Request) and request.command is Command.UDP_ASSOCIATE
    if not udp:  # a UDP association records its first datagram's destination instead
        record.destination = request.destination
    if not have_slot:
        refusal = too_many(ctx, record.client)
        logger.warning("refusing %s: %s", record.client, refusal)
        await _refuse(stream, machine, record, refusal)
        return
    if udp:
        assert isinstance(machine, Socks5Server)
        record.front_end = "udp"
        await serve_udp_association(stream, machine, request.destination, ctx, record)
        return
    assert machine is not None  # a request came from it
    await _connect(stream, machine, request, ctx, record, resume=resume)


async def _handshake(
    stream: trio.SocketStream,
    machine: SocksMachine,
    ctx: ProxyContext,
    client: str,
    deadline: float,
) -> Request | Socks4Request:
    """Until the request: each step's bytes sent in order, reading only when it needs."""
    hold = auth_hold(ctx, client)
    while True:
        output, outcome = handshake_step(machine, ctx.credentials, hold)
        if output:
            await send_raw(stream, output)
        if isinstance(outcome, Held):
            await send_held(stream, outcome, deadline)
            continue
        if outcome is NEED_DATA:
            machine.receive_data(await receive_raw(stream))
            continue
        if isinstance(outcome, Closed):
            raise _Closed(outcome.reason)
        if isinstance(outcome, RemoteProtocolError):
            raise outcome
        return outcome


async def receive_raw(stream: trio.SocketStream) -> bytes:
    """One read of the client's fd; waits only when nothing is there yet (b"": EOF).

    Raises OSError (reset) like any socket read; cancellable while waiting."""
    fd = stream.socket.fileno()
    while True:
        try:
            return os.read(fd, SOCKS_HANDSHAKE_READ)
        except BlockingIOError:
            pass
        await trio.lowlevel.wait_readable(fd)  # outside the except: no exception kept alive


async def send_raw(stream: trio.SocketStream, data: bytes) -> None:
    """Write all of data to the client's fd; waits only when the socket buffer is full.

    A handshake message fits in one write, so this normally makes no trip through the
    scheduler. Raises OSError (EPIPE, reset) when the client is gone."""
    await write_fd_all(stream.socket.fileno(), data)


def reply_bytes(machine: SocksMachine, code: SocksReply, bind: tuple[IPAddress, int]) -> bytes:
    if isinstance(machine, Socks5Server):
        return machine.send(Reply(code, bind))
    return machine.send(Socks4Reply(code == SocksReply.SUCCEEDED, bind))


async def _refuse(
    stream: trio.SocketStream,
    machine: SocksMachine | None,
    record: ConnectionRecord,
    error: RemoteProtocolError,
) -> None:
    """Send the refusal the machine's state calls for (nothing for a non-SOCKS peer)."""
    record.outcome = str(error)
    logger.debug("%s: %s", record.client, error)
    if machine is None:
        return
    await send_final(stream, machine.send_error(error))


async def send_held(stream: trio.SocketStream, held: Held, deadline: float) -> None:
    """An RFC 1929 answer held back (proto/auth_delay.py): wait, send it, and end the
    connection when it is a failure. An answer due after the handshake deadline (many
    attempts queued from one address) is a failure now, whatever the password."""
    if trio.current_time() + held.seconds >= deadline:
        await send_raw(stream, RFC1929_FAILURE)
        raise _Closed(
            "authentication not answered within the handshake time: answers to this "
            "address are held back after repeated failures"
        )
    await trio.sleep(held.seconds)
    await send_raw(stream, held.reply)
    if held.closed is not None:
        raise _Closed(held.closed.reason)


async def send_final(stream: trio.SocketStream, data: bytes) -> None:
    """Send a refusal, then linger (see _linger)."""
    if data:
        with (
            trio.move_on_after(SOCKS_LINGER_TIME),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(data)
        await _linger(stream)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close and drain what the client already sent, for a bounded time and size, so
    closing with unread bytes (an RST) cannot destroy a refusal before it is read."""
    with (
        trio.move_on_after(SOCKS_LINGER_TIME),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_eof()
        drained = 0
        while drained < SOCKS_LINGER_BYTES:
            chunk = await stream.receive_some(SOCKS_HANDSHAKE_READ)
            if not chunk:
                break
            drained += len(chunk)


async def _connect(
    stream: trio.SocketStream,
    machine: SocksMachine,
    request: Request | Socks4Request,
    ctx: ProxyContext,
    record: ConnectionRecord,
    *,
    resume: Resume | None = None,
) -> None:
    try:
        if resume is not None and resume.dial_error is not None:
            raise resume.dial_error
        if resume is not None and resume.dialed is not None:
            dialed = resume.dialed
        elif resume is not None and resume.pending is not None:
            dialed = await ctx.dialer.finish(resume.pending)
        else:
            dialed = await ctx.dialer.connect(request.destination, record.client)
    except Proxy64Error as exc:
        record.failed(exc)
        await send_final(stream, reply_bytes(machine, exc.socks_reply, NO_BIND))
        return
    except OSError as exc:  # the dialer should have typed it; still answer the client
        record.outcome = f"cannot connect to {request.destination}: {exc}"
        await send_final(stream, reply_bytes(machine, SocksReply.GENERAL_FAILURE, NO_BIND))
        return
    try:
        record.reached_by(dialed)
        if resume is None or not resume.replied:
            await send_raw(stream, reply_bytes(machine, SocksReply.SUCCEEDED, dialed.local))
        early = machine.trailing_data()
        if early:  # optimistic clients send their first bytes with the request
            await dialed.stream.send_all(early)
            record.bytes_up += len(early)
        await ctx.relay(stream, dialed.stream, record)
    finally:
        await close_stream(dialed.stream)  # a socket: closed at once, no checkpoint
    if record.outcome == "open":
        record.outcome = "ok"


