"""Start `proxy64` inside a namespace of the test network, reusing the start-up line parsing
of tests/helpers/proxy_process.py. The process is `ip netns exec NS python -m proxy64 ...`
(ip execs, so the PID is proxy64's) and is stopped by that PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.proxy_process import STARTUP_RE, ProxyProcess
from tests.network.configs import REPO
from tests.network.netlab import Netlab

START_TIMEOUT = 15.0  # includes RFC 7050 discovery for --nat64-prefix auto
COMMAND_TIMEOUT = 20.0


def _host_port(text: str) -> tuple[str, int] | None:
    if text == "off":
        return None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def proxy64_argv(netns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "proxy64", *args]


def start_proxy_in(lab: Netlab, *args: str, netns: str | None = None) -> ProxyProcess:
    """`proxy64 serve ARGS` in the client namespace; waits for its start-up line."""
    argv = ["serve", *args]
    if "--socks" not in argv:
        argv += ["--socks", "127.0.0.1:0"]
    if "--http" not in argv:
        argv += ["--http", "127.0.0.1:0"]
    handle, name = tempfile.mkstemp(prefix="proxy64-netns-", suffix=".log", dir=lab.workdir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        proxy64_argv(netns or lab.client, *argv),
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=handle,
        env=env,
        cwd=REPO,
    )
    os.close(handle)
    proxy = ProxyProcess(process, Path(name))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in proxy.output().splitlines():
            match = STARTUP_RE.match(line)
            if match:
                proxy.startup_line = line
                proxy.socks = _host_port(match["socks"])
                proxy.http = _host_port(match["http"])
                proxy.prefix = match["prefix"]
                proxy.egress = match["egress"]
                proxy.why = match["why"]
                return proxy
        if process.poll() is not None:
            break
        time.sleep(0.05)
    proxy.stop(signal.SIGKILL)
    raise AssertionError(
        f"proxy64 {' '.join(argv)} in {netns or lab.client} gave no start-up line "
        f"(exit {process.returncode}):\n{proxy.output()}"
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
