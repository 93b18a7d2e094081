"""A TUN TCP flow as a trio stream, so the proxy's relay carries it like any socket.

Invariants: receive_some returns b"" exactly once the app's FIN is read and raises
BrokenResourceError after a reset; send_all waits while the flow's send buffer is full
(backpressure toward the destination); aclose is graceful (FIN) when the app's data was
all read, a reset otherwise, and it does its work before its first checkpoint, so
trio.aclose_forcefully closes it properly too. receive_some/send_all yield to the
scheduler once per TUN_FAIR_SHARE bytes (or when they wait), not on every call; they
always notice a cancellation before taking or giving a byte.
"""

from __future__ import annotations

import errno
from typing import Protocol

import trio

from proxy64.defaults import TUN_FAIR_SHARE, TUN_RECEIVE_MAX
from proxy64.flow.build import TcpHeaders
from proxy64.flow.tcp_flow import RESET_BY_APP, Action, TcpFlow
from proxy64.flow.wire import FlowKey


class Executor(Protocol):
    def execute(self, key: FlowKey, flow: TcpFlow, actions: list[Action]) -> None: ...

    def cork(self, stream: TunTcpStream) -> None: ...


class TunTcpStream(trio.abc.HalfCloseableStream):
    def __init__(self, executor: Executor, key: FlowKey, flow: TcpFlow) -> None:
        self._executor = executor
        self.key = key
        self.flow = flow
        self.headers = TcpHeaders(key)  # the flow's segments' headers, built fast
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._sending = False
        self._receiving = False
        self.sends = 0  # send_all calls so far (the executor's cork bookkeeping)
        self._unyielded = 0  # bytes moved since this stream last yielded to the scheduler
        self._reset_on_close = False  # the other side of the relay broke: close with RST

    def wake(self) -> None:
        self._lot.unpark_all()

    async def _enter(self) -> None:
        """Yield once per TUN_FAIR_SHARE bytes, else only notice a cancellation: a trip
        through the run loop per 64 KiB chunk cost more than the chunk's Python work.
        Always before any byte is taken or given, so a cancellation loses nothing."""
        if self._unyielded >= TUN_FAIR_SHARE:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def _run(self, actions: list[Action]) -> None:
        if actions:
            self._executor.execute(self.key, self.flow, actions)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the TUN flow stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TUN flow")
        self._receiving = True
        try:
            await self._enter()
            flow = self.flow
            while not flow.readable:
                self._unyielded = 0
                await self._lot.park()
                if self._closed:
                    raise trio.ClosedResourceError("the TUN flow stream was closed")
            if flow.reset_reason is not None:
                raise self._broken(flow.reset_reason)
            # no max_bytes: everything queued up to TUN_RECEIVE_MAX, in one piece (one copy
            # either way: the join here, or the bytes() below) and one relay turn
            chunk, actions = flow.receive(max_bytes or TUN_RECEIVE_MAX, trio.current_time())
            self._run(actions)
            # a view into the packet the app sent becomes bytes here (the one copy)
            data = chunk if type(chunk) is bytes else bytes(chunk)
            self._unyielded += len(data)
        finally:
            self._receiving = False
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TUN flow stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TUN flow")
        self._sending = True
        try:
            await self._enter()
            # bytes go to the flow as they are (its buffer keeps them without a copy)
            view: bytes | memoryview = data if type(data) is bytes else memoryview(data)
            flow = self.flow
            while view:
                if flow.reset_reason is not None:
                    raise self._broken(flow.reset_reason)
                if not flow.can_send:
                    raise trio.ClosedResourceError("send_all after send_eof on a TUN flow")
                if flow.send_space == 0:
                    self._unyielded = 0
                    await self._lot.park()
                    if self._closed:
                        raise trio.ClosedResourceError("the TUN flow stream was closed")
                    continue
                # more=True: a partial last segment waits for the relay's next chunk
                # (the executor pushes it if none comes), so bulk data leaves in full
                # segments instead of a full one plus a sliver per chunk.
                accepted, actions = flow.send(view, trio.current_time(), more=True)
                self._run(actions)
                view = memoryview(view)[accepted:] if accepted < len(view) else b""
                self._unyielded += accepted
        finally:
            self._sending = False
            self.sends += 1
            if self.flow.holds_tail:  # a partial segment waits: have it pushed soon
                self._executor.cork(self)

    async def wait_send_all_might_not_block(self) -> None:
        while self.flow.can_send and self.flow.send_space == 0 and not self._closed:
            await self._lot.park()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TUN flow stream was closed")
        if self.flow.reset_reason is not None:
            raise self._broken(self.flow.reset_reason)
        self._run(self.flow.send_eof(trio.current_time()))
        await trio.lowlevel.checkpoint()

    def _broken(self, reason: str) -> trio.BrokenResourceError:
        error = trio.BrokenResourceError(f"TUN flow {self.key}: {reason}")
        if reason == RESET_BY_APP:  # the app's RST, told apart from our own aborts
            error.__cause__ = ConnectionResetError(errno.ECONNRESET, reason)
        return error

    def reset_on_close(self) -> None:
        """Close with RST (RFC 9293 §3.10.4 ABORT), not FIN: the origin reset or broke."""
        self._reset_on_close = True

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            now = trio.current_time()
            if self._reset_on_close:
                self._run(self.flow.abort("the origin's side of the tunnel broke"))
            else:
                self._run(self.flow.close(now))
            self.wake()
        await trio.lowlevel.checkpoint()
