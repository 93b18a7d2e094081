"""Waits a helper's coroutine names instead of making them, so that one coroutine can be
stepped by the relay hub's callbacks and carried on by a trio task.

A *stepped* helper (an HTTP forwarding exchange, net/http_exchange.py) awaits only what
this module gives: `wait(Readable(fd, deadline))`, `wait(Writable(fd))`, `in_task(fn)`
and `write_all(fd, data)`. Each yields a `Step` to whoever drives the coroutine. The
executor (net/executor_remote.py) drives it from hub callbacks for as long as every step
is a wait for its dialed socket to become readable (a hub watcher under the executor's
one timer; a deadline that passes is trio.TooSlowError thrown in at the wait). At any other
step it hands the coroutine to a task, where `run_stepped()` carries each step out with
trio. The coroutine's code, and so every decision in it, is the same either way.

Invariant: a stepped coroutine never calls trio itself (a trio wait made in a hub callback
would belong to the hub's task); `in_task(fn)` is how it asks for anything else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import trio


class Step:
    """What a stepped coroutine waits for."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Readable(Step):
    """fd readable; trio.TooSlowError once `deadline` (trio's clock) passes."""

    fd: int
    deadline: float = math.inf


@dataclass(frozen=True, slots=True)
class Writable(Step):
    """fd writable."""

    fd: int


@dataclass(frozen=True, slots=True)
class InTask(Step):
    """Only a task can do this: await call() there; its result is the step's."""

    call: Callable[[], Awaitable[Any]]


class _Wait:
    __slots__ = ("step",)

    def __init__(self, step: Step) -> None:
        self.step = step

    def __await__(self) -> Generator[Step, Any, Any]:
        return (yield self.step)


def wait(step: Step) -> Awaitable[Any]:
    """Wait for step in whichever driver runs the coroutine."""
    return _Wait(step)


def in_task(call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """await call() in a task (the hub hands the coroutine over first)."""
    return _Wait(InTask(call))


async def write_all(
    fd: int, data: bytes, wait_writable: Callable[[int], Awaitable[object]] | None = None
) -> None:
    """Write all of data to a non-blocking socket fd, waiting only when it would block:
    by a `Writable` step, or by `wait_writable(fd)` (trio's, outside a stepped coroutine:
    net/relay.py's write_fd_all). Raises OSError when broken."""
    view: bytes | memoryview = data  # a view (no copy) only once a write fell short
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            pass
        else:
            if written == len(view):
                return
            view = memoryview(view)[written:]
            continue
        # outside the except: the BlockingIOError and its traceback are not kept alive
        await (wait(Writable(fd)) if wait_writable is None else wait_writable(fd))


async def run_stepped(coro: Coroutine[Any, Any, Any], step: Step | None = None) -> Any:
    """Carry a stepped coroutine on in this task from `step` (None: from its start); its
    return value. What a step raises (trio.TooSlowError, Cancelled) is thrown in there."""
    value: Any = None
    error: BaseException | None = None
    if step is None:
        try:
            step = coro.send(None)
        except StopIteration as stop:
            return stop.value
    while True:
        try:
            value, error = await _carry_out(step), None
        except BaseException as exc:  # thrown into the coroutine, which may handle it
            value, error = None, exc
        try:
            step = coro.throw(error) if error is not None else coro.send(value)
        except StopIteration as stop:
            return stop.value
        finally:
            error = None  # no reference cycle through the traceback


async def _carry_out(step: Step) -> Any:
    if isinstance(step, Readable):
        if step.deadline == math.inf:
            await trio.lowlevel.wait_readable(step.fd)
        else:
            with trio.fail_at(step.deadline):
                await trio.lowlevel.wait_readable(step.fd)
        return None
    if isinstance(step, Writable):
        await trio.lowlevel.wait_writable(step.fd)
        return None
    if isinstance(step, InTask):
        return await step.call()
    raise TypeError(f"not a step: {step!r}")
