"""Start `proxy64` inside a namespace of the test network, with the start loop of
tests/helpers/proxy_process.py. The process is `ip netns exec NS python -m proxy64 ...`
(ip execs, so the PID is proxy64's) and is stopped by that PID.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers.proxy_process import ProxyProcess, start_proxy
from tests.network.configs import REPO
from tests.network.netlab import Netlab

COMMAND_TIMEOUT = 20.0


def proxy64_argv(netns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "proxy64", *args]


def start_proxy_in(lab: Netlab, *args: str, netns: str | None = None) -> ProxyProcess:
    """`proxy64 serve ARGS` in the client namespace; waits for its start-up line."""
    where = netns or lab.client
    return start_proxy(
        *args, wrapper=["ip", "netns", "exec", where], log_dir=lab.workdir, where=f" in {where}"
    )


@contextmanager
def proxy_in(lab: Netlab, *args: str) -> Iterator[ProxyProcess]:
    proxy = start_proxy_in(lab, *args)
    try:
        yield proxy
    finally:
        proxy.stop()


def run_proxy64_in(lab: Netlab, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a proxy64 command to completion in the client namespace (discover, resolve)."""
    return subprocess.run(
        proxy64_argv(lab.client, *args),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )
