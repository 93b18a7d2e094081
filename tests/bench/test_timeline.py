"""bench/timeline.py: the gaps between proxy64's system calls on one connection's way to
its first byte. The parser and the step table on recorded `perf script` lines (their
exact figures known), then the whole tool on a real serve process (root and perf)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.timeline import ANSWER_WRITE, parse, timeline
from tests.helpers.requirements import require_root, require_tool

REPO = Path(__file__).resolve().parents[2]

# Three connections as perf prints them (time in s, read 0, write 1, connect 42, accept4
# 288); the second and third make the same calls, the first one more (an EAGAIN read).
# Between them, calls of nobody's connection and an accept4 that found nothing.
LINES = """
 100.000000:  raw_syscalls:sys_exit: NR 232 = 1
 100.000010:  raw_syscalls:sys_exit: NR 288 = 7
 100.000020: raw_syscalls:sys_enter: NR 0 (7, 0, 0, 0, 0, 0)
 100.000022:  raw_syscalls:sys_exit: NR 0 = -11
 100.000030: raw_syscalls:sys_enter: NR 0 (7, 0, 0, 0, 0, 0)
 100.000032:  raw_syscalls:sys_exit: NR 0 = 56
 100.000040: raw_syscalls:sys_enter: NR 1 (8, 0, 0, 0, 0, 0)
 100.000050:  raw_syscalls:sys_exit: NR 1 = 56
 100.000060: raw_syscalls:sys_enter: NR 1 (7, 0, 0, 0, 0, 0)
 100.000070:  raw_syscalls:sys_exit: NR 1 = 57
 101.000000:  raw_syscalls:sys_exit: NR 288 = -11
 102.000000:  raw_syscalls:sys_exit: NR 288 = 7
 102.000020: raw_syscalls:sys_enter: NR 0 (7, 0, 0, 0, 0, 0)
 102.000022:  raw_syscalls:sys_exit: NR 0 = 56
 102.000040: raw_syscalls:sys_enter: NR 1 (8, 0, 0, 0, 0, 0)
 102.000050:  raw_syscalls:sys_exit: NR 1 = 56
 102.000060: raw_syscalls:sys_enter: NR 1 (7, 0, 0, 0, 0, 0)
 102.000090:  raw_syscalls:sys_exit: NR 1 = 57
 102.500000: raw_syscalls:sys_enter: NR 3 (7, 0, 0, 0, 0, 0)
 103.000000:  raw_syscalls:sys_exit: NR 288 = 9
 103.000040: raw_syscalls:sys_enter: NR 0 (9, 0, 0, 0, 0, 0)
 103.000042:  raw_syscalls:sys_exit: NR 0 = 56
 103.000050: raw_syscalls:sys_enter: NR 1 (8, 0, 0, 0, 0, 0)
 103.000060:  raw_syscalls:sys_exit: NR 1 = 56
 103.000070: raw_syscalls:sys_enter: NR 1 (9, 0, 0, 0, 0, 0)
 103.000080:  raw_syscalls:sys_exit: NR 1 = 57
""".splitlines()


def test_the_usual_sequence_and_its_median_gaps() -> None:
    calls = parse(LINES)
    assert len(calls) == 26  # the blank line is skipped
    result = timeline(calls, ANSWER_WRITE["http"])
    assert (result.connections, result.usual) == (3, 2)
    assert [step for step, _ in result.steps] == [
        "accept4) -> read(",
        "read( -> read)",
        "read) -> write(",
        "write( -> write)",
        "write) -> write(",
        "write( -> write)",
    ]
    # medians of the two usual connections: (20, 40) and (10, 10) and (20, 30) µs
    gaps = [round(gap, 3) for _, gap in result.steps]
    assert gaps == [30.0, 2.0, 13.0, 10.0, 10.0, 20.0]
    assert round(result.total, 3) == 85.0  # medians of 90 and 80


def test_a_recording_without_a_whole_connection_gives_nothing() -> None:
    calls = parse(LINES[:8])  # accepted and read, never answered
    assert timeline(calls, ANSWER_WRITE["http"]).usual == 0


def test_a_forwarded_request_is_timed_on_a_real_serve() -> None:
    require_root()
    require_tool("perf")
    probe = subprocess.run(
        ["perf", "stat", "-e", "raw_syscalls:sys_enter", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"perf cannot count system calls here: {probe.stderr.strip()[-200:]}")
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "timeline.py"), "--kind", "http", "--conns", "200"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    kind, seen = lines[0].split()[:2]
    assert kind == "http:" and 150 <= int(seen) <= 200, run.stdout  # whole ones recorded
    assert any("connect(" in line for line in lines)  # the dial is on the way
    assert lines[-1].endswith("in all, accept to the answer written")
    assert float(lines[-1].split()[0]) > 0
