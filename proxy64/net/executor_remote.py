"""The remote side of one connection the executor (net/executor.py) serves: the dial
(connected inside connect(2); in flight, watched by the hub; or awaited in a task), the
tunnel (an owned hub tunnel, or relay() in a task when promoted or not carried by the
hub), and a protocol's `Await` step run in a task with its helper.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from select import EPOLLOUT
from typing import Any

import trio

from proxy64.destination import Destination
from proxy64.errors import Proxy64Error
from proxy64.net.context import ConnectionRecord
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.executor_client import (
    NO_MACHINE,
    SHUTDOWN_OUTCOME,
    AwaitHelper,
    ClientSide,
    Wait,
)
from proxy64.net.outcomes import client_lost
from proxy64.net.relay import relay
from proxy64.net.relay_hub import Ending, HubTunnel
from proxy64.net.resets import broken_outcome
from proxy64.net.steps import Readable, Step, run_stepped
from proxy64.proto.session import Await, Connected, Dial, DialFailed, Event
from proxy64.proto.session import Relay as RelayCommand


class RemoteSide(ClientSide):
    """A connection's dial, tunnel and awaited steps (on top of its client side)."""

    __slots__ = ()

    # --- the dial ----------------------------------------------------------------------------

    def _dial(self, command: Dial) -> None:
        destination = command.destination
        self.bound_wanted = command.bound_address
        try:
            result = self.front.ctx.dialer.connect_now(destination, self.client)
        except Proxy64Error as exc:
            self._dial_failed(exc)
            return
        except OSError as exc:  # the dialer should have typed it; still answer
            self._dial_failed(Proxy64Error(f"cannot connect to {destination}: {exc}"))
            return
        if result is None:  # a name to resolve, a race: a task awaits the dialer
            self._keep_reading()
            self._spawn(self._dial_task, destination)
        elif isinstance(result, PendingDial):  # in flight: the hub waits for writability
            self._keep_reading()
            self.pending = result
            self.wait = Wait.DIAL
            self.front.hub.watch_writable(result.sock.fileno(), self)
            self._arm(result.deadline)
        else:
            self._connected(result)

    async def _dial_task(self, destination: Destination) -> None:
        turn = self.turn
        error: Proxy64Error | None = None
        try:
            dialed = await self.front.ctx.dialer.connect(destination, self.client)
        except Proxy64Error as exc:
            error = exc.with_traceback(None)  # kept in this frame: its traceback holds it
        except OSError as exc:
            error = Proxy64Error(f"cannot connect to {destination}: {exc}")
        if self.turn != turn or self.wait is not Wait.TASK:  # interrupted, or ended
            if error is None:
                dialed.close()
            return
        self.now = trio.current_time()
        self.wait = Wait.NOTHING
        if error is not None:
            self._dial_failed(error)
        else:
            self._connected(dialed)
        self._proceed()

    def _connected(self, dialed: Dialed) -> None:
        self.dialed = dialed
        if self.record is not None:
            self.record.reached_by(dialed)
        self._event(Connected(dialed.local if self.bound_wanted else None))

    def _dial_failed(self, error: Proxy64Error) -> None:
        if self.record is not None:
            self.record.failed(error)
        self._event(DialFailed(error))

    # --- the tunnel --------------------------------------------------------------------------

    def _relay(self, command: RelayCommand) -> None:
        early = command.early
        dialed, front = self.dialed, self.front
        assert dialed is not None, "Relay before a Connected dial"
        self.machine = NO_MACHINE  # Relay is terminal: nothing is fed to it again
        remote = dialed.sock
        if front.relay_settings is None or remote is None:
            self._arm(math.inf)
            self._want(0)
            self._spawn(self._relay_task, early, None)  # a relay the hub cannot carry
            return
        written = 0
        if early:
            try:
                written = os.write(remote.fileno(), early)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._end(broken_outcome(False, exc))
                return
            if self.record is not None:
                self.record.bytes_up += written
        if self.registered == EPOLLOUT:
            self._want(0)
        record = self.record
        assert record is not None, "Relay without a record"
        # a client fd the hub watches becomes the tunnel's without another epoll_ctl
        tunnel = front.hub.add(self.sock, remote, record, front.threshold, owner=self)
        self.held = -1  # a held dial fd is the tunnel's now
        self.registered = 0
        self.tunnel = tunnel
        self.wait = Wait.TUNNEL
        if written < len(early):  # the rest goes from the relay's task path
            tunnel.pending_up = early[written:]
            front.hub.promote(tunnel)
            return
        settings = front.relay_settings
        self._arm(tunnel.last_active + settings.idle_timeout)

    def tunnel_ended(self, tunnel: HubTunnel) -> None:
        try:
            if self.wait is not Wait.TUNNEL:
                return
            self._arm(math.inf)
            if tunnel.ending is Ending.PROMOTED:  # bulk, or a full side: relay()'s task path
                self._spawn(self._relay_task, b"", tunnel)
                return
            if tunnel.broken:
                self.front.served.logger.debug("tunnel %s: %s", self.client, tunnel.broken)
            self._end(tunnel.broken or "ok")
        except Exception as exc:
            self.bug(exc)

    async def _relay_task(self, early: bytes, promoted: HubTunnel | None) -> None:
        """The tunnel in a task: relay() from a promoted hub tunnel's tails, or ctx.relay
        when the hub cannot carry it; the connection ends here."""
        front, record, dialed = self.front, self.record, self.dialed
        assert record is not None and dialed is not None
        client = self._stream()
        scope = self.scope
        try:
            if promoted is not None:
                settings = front.relay_settings
                assert settings is not None
                await relay(
                    client,
                    dialed.stream,
                    record,
                    idle_timeout=settings.idle_timeout,
                    splice_threshold=settings.splice_threshold,
                    splice_release_after=settings.splice_release_after,
                    promoted=promoted,
                    hub=front.hub,
                )
            else:
                if early:  # optimistic clients send their first bytes with the request
                    await dialed.stream.send_all(early)
                    record.bytes_up += len(early)
                await front.ctx.relay(client, dialed.stream, record)
            if record.outcome == "open" and not (scope and scope.cancel_called):
                record.outcome = "ok"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if record.outcome == "open":
                record.outcome = client_lost(exc)
        finally:
            self._end(SHUTDOWN_OUTCOME)

    # --- a protocol's own awaited step -------------------------------------------------------

    def _drop_dialed(self) -> None:
        self._release_held()
        dialed, self.dialed = self.dialed, None
        if dialed is not None:
            dialed.close()

    def _await(self, command: Await) -> None:
        served, kind = self.front.served, type(command)
        step: Callable[[ConnectionRecord | None], Awaitable[Event | None]]
        stepped = served.stepped_helpers.get(kind)
        if stepped is not None:  # stepped from here while it waits for the dialed socket
            assert self.dialed is not None, f"{command!r} before a Connected dial"
            self._keep_reading()
            coro = stepped(
                command,
                self.sock,
                self.record,
                self.front.ctx,
                dialed=self.dialed,
                stream=self._stream,
            )
            assert isinstance(coro, Coroutine), "a stepped helper is an async function"
            self._step(coro, None, None)
            return
        helper: AwaitHelper | None = served.helpers.get(kind)
        if helper is None:  # a step on the dialed stream, given the client's socket
            assert self.dialed is not None, f"{command!r} before a Connected dial"
            step = partial(
                served.dialed_helpers[kind],
                command,
                self.sock,
                ctx=self.front.ctx,
                dialed=self.dialed,
                stream=self._stream,
            )
        else:
            step = partial(self._with_stream, helper, command)
        self._keep_reading()  # no epoll_ctl now and none when the machine reads again
        self._spawn(self._helper_task, step)

    async def _with_stream(
        self, helper: AwaitHelper, command: Await, record: ConnectionRecord | None
    ) -> Event | None:
        return await helper(command, self._stream(), record, self.front.ctx)

    async def _helper_task(
        self, step: Callable[[ConnectionRecord | None], Awaitable[Event | None]]
    ) -> None:
        turn, record = self.turn, self.record
        try:
            event = await step(record)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._end(client_lost(exc))
            return
        if self.turn != turn or self.wait is not Wait.TASK:
            return
        self.now = trio.current_time()
        self._helped(event)

    # --- a stepped helper (net/steps.py) in the hub ------------------------------------------

    def _step(
        self, coro: Coroutine[Any, Any, Any], value: Any, error: BaseException | None
    ) -> None:
        """Advance a stepped helper's coroutine: it waits here, in the hub, for the dialed
        socket to become readable (the one timer armed for its deadline); at any other step
        a task carries it on. Its result is fed to the machine as a task's would be."""
        try:
            step = coro.throw(error) if error is not None else coro.send(value)
        except StopIteration as stop:
            self._helped(stop.value)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._end(client_lost(exc))
            return
        finally:
            error = None  # no reference cycle through the traceback
        dialed = self.dialed
        if (
            isinstance(step, Readable)
            and dialed is not None
            and dialed.sock is not None
            and step.fd == dialed.sock.fileno()
        ):
            self.wait = Wait.STEPPED
            self.stepped = (coro, step.fd)
            self.front.hub.watch(step.fd, _DialedReadable(self))
            if step.fd == self.held:
                self.held = -1  # its registration is the watch's now
            self._arm(step.deadline)
            return
        self._spawn(self._helper_task, partial(self._stepped_task, coro, step))

    async def _stepped_task(
        self, coro: Coroutine[Any, Any, Any], step: Step, record: ConnectionRecord | None
    ) -> Event | None:
        event: Event | None = await run_stepped(coro, step)
        return event

    def _resume_stepped(self, error: BaseException | None) -> None:
        """The dialed socket is readable (error None) or the step's deadline passed."""
        stepped, self.stepped = self.stepped, None
        assert stepped is not None
        coro, fd = stepped
        self.front.hub.unwatch(fd)
        self.wait = Wait.NOTHING
        self._arm(math.inf)
        self._step(coro, None, error)

    def _helped(self, event: Event | None) -> None:
        """A helper's result: the connection ends (None) or the machine is fed it."""
        if event is None:
            self._end("ok")
            return
        self.wait = Wait.NOTHING
        self._event(event)
        self._proceed()


class _DialedReadable:
    """The hub's watcher of a dialed socket a stepped helper waits for."""

    __slots__ = ("owner",)

    def __init__(self, owner: RemoteSide) -> None:
        self.owner = owner

    def readable(self, now: float) -> None:
        owner = self.owner
        owner.now = now
        try:
            if owner.wait is Wait.STEPPED:
                owner._resume_stepped(None)
        except Exception as exc:
            owner.bug(exc)
