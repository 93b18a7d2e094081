"""The bench's scheduling counts (`--profile cpu` reports them per connection): a thread
of a child that sleeps N times is counted with at least N voluntary switches, and the
counts of a tree only grow."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.run import tree_scheduling

SLEEPS = 20
# Only a second thread sleeps, and it is still alive when counted: every thread counts.
CHILD = f"""
import sys, threading, time
napped, leave = threading.Event(), threading.Event()
def nap():
    for _ in range({SLEEPS}):
        time.sleep(0.001)
    napped.set()
    leave.wait()
worker = threading.Thread(target=nap)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
worker.start(); napped.wait()
sys.stdout.write("done\\n"); sys.stdout.flush()
sys.stdin.readline()
leave.set(); worker.join()
"""


def test_sleeps_are_counted_as_voluntary_switches_of_every_thread() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        before = tree_scheduling(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        after = tree_scheduling(child.pid)
        assert after.voluntary - before.voluntary >= SLEEPS
        assert after.involuntary >= before.involuntary
        assert after.waiting >= before.waiting >= 0
    finally:
        child.kill()
        child.wait(10)


def test_a_process_that_is_gone_counts_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    time.sleep(0.01)
    assert tree_scheduling(child.pid) == (0, 0, 0.0)
