"""`serve --workers N`: keep N worker processes running, restart the dead, stop them all.

The supervisor is the process the user started. It never accepts a connection and never
runs trio (a process forked from inside trio.run could not run trio again, and a restart
is a fork): it waits for signals with sigtimedwait and does four things.
- A worker that dies is forked again after a delay (RestartBackoff): the first delay is
  short, it doubles for every quick death in a row (a crash loop cannot spin) and falls
  back to the first one after a worker ran WORKER_HEALTHY_AFTER seconds. One log line each.
- A worker that stops answering is killed (SIGKILL by PID), then restarted as above: each
  worker writes a byte to its heartbeat pipe every heartbeat_interval(timeout) seconds from
  its trio loop, several times per `timeout`, and the supervisor reads the pipes as often;
  silence for `timeout` seconds means the loop is stuck (or the process stopped), and with
  SO_REUSEPORT its share of new connections would wait forever.
- SIGHUP: on_reload() checks the files once, here; when they are good the signal is
  passed on to every worker by PID (each applies them itself), else nothing changes.
- SIGINT/SIGTERM is passed on to every worker by PID; no worker is restarted after it.
  A worker still alive after `stop_timeout` gets SIGKILL by PID; a second signal sends
  SIGKILL at once. The supervisor returns when every worker has been reaped.
- Its exit status is 0 when every worker running at the stop signal exited cleanly, else
  1 (a worker that died before, and was waiting for its restart, was logged then).
How a worker is made (sockets, fork, what it runs) is the caller's `spawn(slot)`; what
else happens when one exits (metrics) is the caller's `on_exit(pid, restarting)`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from proxy64.defaults import (
    WORKER_BEATS_PER_TIMEOUT,
    WORKER_HEALTHY_AFTER,
    WORKER_HEARTBEAT,
    WORKER_RESTART_FIRST_DELAY,
    WORKER_RESTART_MAX_DELAY,
    WORKER_TIMEOUT,
)

logger = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
_WAITED = STOP_SIGNALS | {signal.SIGCHLD, signal.SIGHUP}
_IDLE_WAIT = 3600.0  # sigtimedwait bound when nothing is scheduled (signals wake it anyway)


def heartbeat_interval(timeout: float) -> float:
    """Seconds between a worker's heartbeats, and between the supervisor's looks at them.

    Several beats fit in `timeout`: a healthy worker whose beat comes a little late (its
    sleep runs over, the supervisor looked just before) is never taken for a silent one;
    only a loop that misses most of a timeout's beats is.
    """
    return min(WORKER_HEARTBEAT, timeout / WORKER_BEATS_PER_TIMEOUT)


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    """The delay before a dead worker is forked again (pure: no clock, no process)."""

    first: float = WORKER_RESTART_FIRST_DELAY
    cap: float = WORKER_RESTART_MAX_DELAY
    healthy_after: float = WORKER_HEALTHY_AFTER

    def delay(self, ran_for: float, previous: float | None) -> float:
        """`previous` is the delay before this worker's start (None: it was not a restart)."""
        if previous is None or ran_for >= self.healthy_after:
            return self.first
        return max(self.first, min(self.cap, previous * 2))


def describe_exit(status: int) -> str:
    """A waitpid status in words: 'exited with status 3' / 'was killed by SIGKILL'."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Spawned(NamedTuple):
    """A forked worker: its PID and the read end of its heartbeat pipe (None: no heartbeat)."""

    pid: int
    heartbeat: int | None = None


@dataclass(slots=True)
class _Slot:
    index: int
    pid: int | None = None
    heartbeat: int | None = None  # read end, non-blocking; closed when the worker is reaped
    last_beat: float = 0.0
    killed_silent: bool = False
    started: float = 0.0
    delay: float | None = None  # the delay before the current start; None: first start
    restart_at: float | None = None  # dead, to be forked again at this time
    status: int | None = None  # the last waitpid status
    running_at_stop: bool = False


@dataclass
class Supervisor:
    """Fork `count` workers with spawn(slot) → Spawned, supervise them until a stop signal.

    The caller blocks SIGINT/SIGTERM before calling run() (so a signal sent as soon as the
    start-up line is printed is not lost); run() blocks SIGCHLD too, and spawn() must
    restore the child's signal mask itself.
    """

    spawn: Callable[[int], Spawned]
    count: int
    stop_timeout: float
    timeout: float = WORKER_TIMEOUT  # heartbeat silence that gets a worker killed
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    clock: Callable[[], float] = time.monotonic
    on_exit: Callable[[int, bool], None] | None = None  # (pid, restarting) per reaped worker
    on_reload: Callable[[], bool] | None = None  # SIGHUP: True passes it on to every worker
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False

    def start(self) -> None:
        """Block the signals run() waits for and fork every worker."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
        self.slots = [_Slot(i) for i in range(self.count)]
        for slot in self.slots:
            self._fork(slot)

    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots if slot.pid is not None]

    def run(self) -> int:
        """Supervise until SIGINT/SIGTERM, then stop every worker; the exit status."""
        if not self.slots:
            self.start()
        while not self.stopping:
            info = signal.sigtimedwait(_WAITED, self._until_next_restart())
            if info is None or info.si_signo == signal.SIGCHLD:
                self._reap()
                self._kill_silent()
                self._restart_due()
                continue
            if info.si_signo == signal.SIGHUP:
                if self.on_reload is not None and self.on_reload():
                    self._signal_all(signal.SIGHUP)
                continue
            logger.info(
                "%s: stopping %d workers", signal.Signals(info.si_signo).name, len(self.pids())
            )
            self.stopping = True
            for slot in self.slots:
                slot.running_at_stop = slot.pid is not None
            self._signal_all(info.si_signo)
        return self._wait_all()

    # --- internals --------------------------------------------------------------------

    def _fork(self, slot: _Slot) -> None:
        spawned = self.spawn(slot.index)
        slot.pid, slot.heartbeat = spawned.pid, spawned.heartbeat
        slot.started = slot.last_beat = self.clock()
        slot.killed_silent = False
        slot.restart_at = None
        slot.status = None

    def _until_next_restart(self) -> float:
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        if any(s.heartbeat is not None for s in self.slots):
            due.append(self.clock() + heartbeat_interval(self.timeout))
        if not due:
            return _IDLE_WAIT
        return max(0.0, min(due) - self.clock())

    def _kill_silent(self) -> None:
        """Read every heartbeat pipe; SIGKILL a worker silent for `timeout` seconds."""
        now = self.clock()
        for slot in self.slots:
            if slot.pid is None or slot.heartbeat is None:
                continue
            try:
                beats = os.read(slot.heartbeat, 4096)
            except BlockingIOError:
                beats = None
            if beats == b"":  # EOF: the worker is stopping on purpose (a signal of its own);
                self._close_heartbeat(slot)  # its exit alarm bounds the drain, not this
                continue
            if beats:
                slot.last_beat = now
            if now - slot.last_beat >= self.timeout and not slot.killed_silent:
                logger.warning(
                    "worker %d (pid %d) has not answered for %.0f s: killing it",
                    slot.index + 1,
                    slot.pid,
                    now - slot.last_beat,
                )
                slot.killed_silent = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)

    def _close_heartbeat(self, slot: _Slot) -> None:
        if slot.heartbeat is not None:
            os.close(slot.heartbeat)
            slot.heartbeat = None

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.pid is None:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            slot.pid, slot.status = None, status
            self._close_heartbeat(slot)
            if self.on_exit is not None:
                self.on_exit(pid, not self.stopping)
            if self.stopping:
                continue
            ran_for = self.clock() - slot.started
            slot.delay = self.backoff.delay(ran_for, slot.delay)
            slot.restart_at = self.clock() + slot.delay
            logger.warning(
                "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                slot.index + 1,
                pid,
                describe_exit(status),
                ran_for,
                slot.delay,
            )

    def _restart_due(self) -> None:
        now = self.clock()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                try:
                    self._fork(slot)
                except OSError as exc:  # fork or bind failed: try again after a longer delay
                    slot.delay = self.backoff.delay(0.0, slot.delay)
                    slot.restart_at = now + slot.delay
                    logger.error(
                        "worker %d cannot be started: %s; trying again in %.1f s",
                        slot.index + 1,
                        exc.strerror or exc,
                        slot.delay,
                    )

    def _signal_all(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _wait_all(self) -> int:
        """Reap every worker; SIGKILL by PID after stop_timeout or on a second signal."""
        for slot in self.slots:
            slot.restart_at = None
        deadline = self.clock() + self.stop_timeout
        killed = False
        while self.pids():
            left = deadline - self.clock()
            if left <= 0 and not killed:
                logger.warning(
                    "workers %s did not stop in %.0f s: killing them",
                    ", ".join(str(p) for p in self.pids()),
                    self.stop_timeout,
                )
                self._signal_all(signal.SIGKILL)
                killed = True
            info = signal.sigtimedwait(_WAITED, max(0.05, left) if not killed else 1.0)
            if info is not None and info.si_signo in STOP_SIGNALS and not killed:
                self._signal_all(signal.SIGKILL)  # a second Ctrl-C: do not wait
                killed = True
            self._reap()
        clean = all(
            slot.status is not None and os.waitstatus_to_exitcode(slot.status) == 0
            for slot in self.slots
            if slot.running_at_stop
        )
        return 0 if clean else 1
