"""The worker supervisor on its own: the restart backoff (pure), exit descriptions, and a
real crash loop of forked children that exit at once, run in a subprocess (the supervisor
blocks signals and waits with sigtimedwait, which must not happen inside pytest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy64.defaults import WORKER_HEARTBEAT
from proxy64.net.supervisor import (
    RestartBackoff,
    Spawned,
    Supervisor,
    _Slot,
    describe_exit,
    heartbeat_interval,
)

REPO = Path(__file__).resolve().parents[2]


def test_backoff_doubles_on_quick_deaths_and_resets_after_a_healthy_run() -> None:
    backoff = RestartBackoff(first=0.1, cap=1.0, healthy_after=10.0)
    delays = []
    previous = None
    for _ in range(7):
        previous = backoff.delay(0.5, previous)
        delays.append(previous)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert backoff.delay(10.0, 1.0) == 0.1  # it ran long enough: start again from the first
    assert backoff.delay(9.99, 1.0) == 1.0


@given(
    ran=st.floats(min_value=0, max_value=1e6),
    previous=st.none() | st.floats(min_value=0.01, max_value=100),
)
def test_backoff_delay_stays_between_first_and_cap(ran: float, previous: float | None) -> None:
    backoff = RestartBackoff(first=0.1, cap=30.0, healthy_after=10.0)
    delay = backoff.delay(ran, previous)
    assert 0.1 <= delay <= 30.0
    if previous is not None and ran < 10.0:
        assert delay == max(0.1, min(30.0, previous * 2))
    else:
        assert delay == 0.1


def test_describe_exit_names_the_signal_or_the_status() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == "exited with status 3"
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == "was killed by SIGKILL"


CRASH_LOOP = textwrap.dedent(
    """
    import json, os, signal, sys
    from proxy64.net.supervisor import RestartBackoff, Spawned, Supervisor

    forks = []

    def spawn(slot):
        pid = os.fork()
        if pid == 0:
            if slot == 0:  # slot 0 exits at once, every time (a worker must not: restart)
                os._exit(0)
            if sys.argv[1] == "stubborn":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            else:  # like a real worker: SIGTERM is a clean stop
                signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            while True:
                signal.pause()  # slot 1 lives until the stop signal (or SIGKILL)
            os._exit(0)
        forks.append(slot)
        return Spawned(pid)  # no heartbeat pipe: never taken for hung

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    # stubborn: slot 1 ignores SIGTERM and must be killed after stop_timeout
    timeout = 1.0 if sys.argv[1] == "stubborn" else 5.0
    sup = Supervisor(spawn, 2, stop_timeout=timeout, backoff=RestartBackoff(0.05, 0.2, 10.0))
    sup.start()
    print("READY", flush=True)
    status = sup.run()
    print(json.dumps({"status": status, "forks": forks, "left": sup.pids()}), flush=True)
    """
)


def test_crash_loop_is_bounded_by_the_backoff_and_stop_reaps_everyone() -> None:
    """Slot 0 dies at once for 1.5 s: delays 0.05, 0.1, 0.2, 0.2, … → about 9 forks, not
    thousands; slot 1 is forked once; SIGTERM ends with no worker left, status 0 (every
    worker running at the stop exited cleanly)."""
    result = run_script("normal", 1.5)
    assert result["left"] == []
    assert result["forks"].count(1) == 1
    crashes = result["forks"].count(0)
    # 1 first start + restarts at 0.05, 0.15, 0.35, 0.55, 0.75, … ≤ 1.5 s (plus fork time)
    assert 5 <= crashes <= 10, result
    assert result["status"] == 0


def test_a_worker_that_ignores_sigterm_is_killed_after_the_stop_timeout() -> None:
    started = time.monotonic()
    result = run_script("stubborn", 0.3)
    took = time.monotonic() - started
    assert result["left"] == []  # reaped: killed by PID
    assert result["status"] == 1  # it did not stop cleanly
    assert 1.0 + 0.3 <= took < 10


def run_script(mode: str, run_for: float) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_LOOP, mode],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(run_for)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_closed_heartbeat_is_a_stopping_worker_and_a_silent_one_is_killed() -> None:
    """EOF on the heartbeat pipe: the worker stopped beating on purpose (SIGTERM of its
    own, draining for shutdown_grace): never SIGKILLed for it. An open pipe that stays
    silent for `timeout` is a hung worker: SIGKILL by PID."""
    stopping, hung = (subprocess.Popen(["sleep", "30"]) for _ in range(2))
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()
    for fd in (r1, r2):
        os.set_blocking(fd, False)
    now = [100.0]
    sup = Supervisor(lambda i: Spawned(0), 2, stop_timeout=1.0, timeout=10.0, clock=lambda: now[0])
    sup.slots = [
        _Slot(0, pid=stopping.pid, heartbeat=r1, last_beat=100.0),
        _Slot(1, pid=hung.pid, heartbeat=r2, last_beat=100.0),
    ]
    try:
        os.write(w1, b".")
        now[0] = 105.0
        sup._kill_silent()
        assert sup.slots[0].last_beat == 105.0 and sup.slots[1].last_beat == 100.0
        os.close(w1)  # the worker's heartbeat task ended: it is draining
        now[0] = 106.0
        sup._kill_silent()
        assert sup.slots[0].heartbeat is None
        now[0] = 200.0
        sup._kill_silent()
        assert hung.wait(5) == -signal.SIGKILL and sup.slots[1].killed_silent
        assert stopping.poll() is None and not sup.slots[0].killed_silent
    finally:
        for proc in (stopping, hung):
            proc.kill()
            proc.wait()
        os.close(w2)
        os.close(r2)


@given(st.floats(min_value=1.0, max_value=3600.0))
def test_several_heartbeats_fit_in_a_timeout_and_none_is_over_a_second_apart(
    timeout: float,
) -> None:
    every = heartbeat_interval(timeout)
    assert every <= WORKER_HEARTBEAT and timeout / every >= 4


def test_late_heartbeats_never_get_a_healthy_worker_killed_and_silence_does() -> None:
    """The supervisor looks at the pipes every heartbeat_interval(timeout) s; a worker's
    beats drift 10 % late each (its sleep runs over) while the looks drift 2 %: for 300
    looks no look finds it silent for `timeout`. With one beat and one look per timeout
    (the cadence that killed healthy workers) the same drift gets it killed. A worker
    that stops beating is killed within timeout + one interval of its last beat."""
    timeout = 1.0
    every = heartbeat_interval(timeout)
    healthy, hung = (subprocess.Popen(["sleep", "30"]) for _ in range(2))
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()
    for fd in (r1, r2):
        os.set_blocking(fd, False)
    now = [0.0]
    sup = Supervisor(
        lambda i: Spawned(0), 2, stop_timeout=1.0, timeout=timeout, clock=lambda: now[0]
    )
    sup.slots = [
        _Slot(0, pid=healthy.pid, heartbeat=r1, last_beat=0.0),
        _Slot(1, pid=hung.pid, heartbeat=r2, last_beat=0.0),
    ]
    try:
        assert sup._until_next_restart() == every  # the supervisor's own cadence
        beat, hung_beats_until, killed_at = 0.0, 0.5, None
        for look in range(1, 301):
            now[0] = look * every * 1.02
            while beat + every * 1.1 <= now[0]:
                beat += every * 1.1
                os.write(w1, b".")
                if beat <= hung_beats_until:
                    os.write(w2, b".")
            sup._kill_silent()
            assert not sup.slots[0].killed_silent, f"healthy worker killed at {now[0]:.2f} s"
            if sup.slots[1].killed_silent and killed_at is None:
                killed_at = now[0]
        assert killed_at is not None and killed_at <= hung_beats_until + timeout + every * 1.02
        assert hung.wait(5) == -signal.SIGKILL and healthy.poll() is None
    finally:
        for proc in (healthy, hung):
            proc.kill()
            proc.wait()
        for fd in (w1, w2, r1, r2):
            os.close(fd)
