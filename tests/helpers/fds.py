"""The process's fd table made full for a moment, as a proxy meets it under load: every
number below RLIMIT_NOFILE is taken, so the next pipe, socket or open fails with EMFILE."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager


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
