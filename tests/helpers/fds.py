"""The process's fd table made full for a moment, as a proxy meets it under load: every
number below RLIMIT_NOFILE is taken, so the next pipe, socket or open fails with EMFILE."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers.requirements import require_tool, tool_path


@contextmanager
def fd_table_full() -> Iterator[int]:
    """Lower the soft RLIMIT_NOFILE to just above the highest open fd and take every free
    number below it; yields how many were taken. Everything is given back on exit. The
    premise (a new pipe fails with EMFILE) is checked before the body runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    held: list[int] = []
    try:
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
        while True:
            try:
                held.append(os.dup(spare))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        try:
            ends = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        else:
            for fd in ends:
                os.close(fd)
            raise AssertionError("a pipe could still be made with the fd table full")
        yield len(held)
    finally:
        for fd in held:
            os.close(fd)
        os.close(spare)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


SHELL_SOFT = 1024  # a login shell's soft RLIMIT_NOFILE on most Linux systems

# CMD for `run` / `tun run`: its parent is proxy64, which raises its own limit while CMD
# starts, so CMD waits (up to 5 s) for that, then prints its own and its parent's limits.
LIMITS_OF_CMD_AND_PARENT = [
    "sh",
    "-c",
    f'for i in $(seq 100); do grep -q "^Max open files *{SHELL_SOFT} " /proc/$PPID/limits'
    ' || break; sleep 0.05; done; grep "^Max open files" /proc/self/limits /proc/$PPID/limits',
]


def from_a_shells_limit(wanted: int) -> tuple[list[str], int]:
    """The `prlimit` argv that starts a command with a shell's soft open-files limit and
    this machine's own hard one (raising that needs CAP_SYS_RESOURCE), and the soft limit
    proxy64 should then give itself for `wanted` fds; skips when the hard limit leaves
    nothing to raise."""
    require_tool("prlimit")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    infinite = hard == resource.RLIM_INFINITY
    expected = wanted if infinite else min(wanted, hard)
    if expected <= SHELL_SOFT:
        pytest.skip(f"the hard open-files limit here is {hard}: nothing to raise past 1024")
    hard_text = "unlimited" if infinite else str(hard)
    return [tool_path("prlimit"), f"--nofile={SHELL_SOFT}:{hard_text}", "--"], expected


def soft_nofile(pid: int) -> int:
    """The process's soft RLIMIT_NOFILE, as /proc/PID/limits shows it."""
    with open(f"/proc/{pid}/limits") as f:
        return int(next(line for line in f if line.startswith("Max open files")).split()[3])


def cmd_and_parent_limits(stdout: str) -> tuple[int, int]:
    """(CMD's soft limit, its parent's) from what LIMITS_OF_CMD_AND_PARENT printed."""
    soft = {line.split(":")[0]: int(line.split()[3]) for line in stdout.splitlines()}
    own = soft.pop("/proc/self/limits")
    (parent,) = soft.values()
    return own, parent
