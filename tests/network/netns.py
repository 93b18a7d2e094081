"""Helpers to act inside a network namespace from the test process, and to clean up the
namespaces a killed test run left behind.

setns(2) with CLONE_NEWNET changes the namespace of the calling thread only, so
run_in_netns() does it in a short-lived thread; a socket created there stays in that
namespace for its whole life.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

R = TypeVar("R")


def run_in_netns(netns: str, function: Callable[[], R]) -> R:
    """Call function in a thread that entered netns (setns is per thread on Linux).

    A socket created inside stays in that namespace after the thread leaves it, so tests
    can talk to servers in the client namespace from the test process itself.
    """
    outcome: list[R] = []
    failure: list[BaseException] = []

    def target() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        other = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(other, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
            try:
                outcome.append(function())
            finally:
                _libc.setns(own, _CLONE_NEWNET)
        except BaseException as exc:
            failure.append(exc)
        finally:
            os.close(own)
            os.close(other)

    thread = threading.Thread(target=target, name=f"in-{netns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def socket_in(netns: str, family: int, kind: int) -> socket.socket:
    return run_in_netns(netns, lambda: socket.socket(family, kind))


STALE_NAME = re.compile(r"^p64n-(?P<pid>\d+)-\d+-[cgo]$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_labs() -> list[str]:
    """Delete namespaces left by a test run that was killed (SIGKILL skips every cleanup).

    Only p64n-<pid>-... namespaces whose creating pytest process is gone; the processes
    still inside them were started by that run, and are stopped by PID first.
    """
    listed = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=10
    ).stdout
    removed = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = STALE_NAME.match(name)
        if match is None or _pid_alive(int(match["pid"])):
            continue
        pids = subprocess.run(
            ["ip", "netns", "pids", name], check=False, capture_output=True, text=True, timeout=10
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        removed.append(name)
    for workdir in Path(tempfile.gettempdir()).glob("p64n-*-*-*"):
        match = re.match(r"p64n-(\d+)-", workdir.name)
        if match and workdir.is_dir() and not _pid_alive(int(match[1])):
            shutil.rmtree(workdir, ignore_errors=True)
    return removed
