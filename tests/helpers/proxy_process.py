"""Start `proxy64 serve` as a subprocess on free loopback ports, for end-to-end tests.

    with proxy_process("--egress", "embedded", "--nat64-prefix", "2001:db8:64::/96") as proxy:
        curl -x {proxy.http_url} ...      # proxy.socks / proxy.http: (host, port)
    # stopped by PID (SIGTERM, then SIGKILL after a timeout) even when the test fails

Unless the args name --socks/--http themselves, both listen on 127.0.0.1 port 0 and the
ports are read from the one start-up line (with --log-format json, from its "message").
proxy.output() is stderr (logs) so far.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_RE = re.compile(
    r"^proxy64: SOCKS5 (?P<socks>\S+|off), HTTP (?P<http>\S+|off); "
    r"NAT64 prefix (?P<prefix>\S+) \((?P<why>.*)\), egress (?P<egress>\w+)"
)
# the NAT64 step done by proxy64 itself, under a documentation prefix: no NAT64 needed
EMBEDDED_PREFIX = "2001:db8:64::/96"
EMBEDDED = ("--egress", "embedded", "--nat64-prefix", EMBEDDED_PREFIX)
START_TIMEOUT = 15.0  # includes RFC 7050 discovery for --nat64-prefix auto
STOP_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[2]


def _host_port(text: str) -> tuple[str, int] | None:
    if text == "off":
        return None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_line: str = ""
    socks: tuple[str, int] | None = None
    http: tuple[str, int] | None = None
    prefix: str = ""
    egress: str = ""
    why: str = ""
    returncode: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def socks_url(self) -> str:
        assert self.socks is not None, "SOCKS5 listener is off"
        return f"socks5h://{_fmt(self.socks)}"

    @property
    def http_url(self) -> str:
        assert self.http is not None, "HTTP listener is off"
        return f"http://{_fmt(self.http)}"

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the proxy by PID and wait; SIGKILL when it does not exit in time."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        self.returncode = self.process.returncode
        return self.process.returncode


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy64_command(command: str = "serve") -> list[str]:
    return [sys.executable, "-m", "proxy64", command]


def start_proxy(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    command: str = "serve",
    wrapper: Sequence[str] = (),
    log_dir: Path | None = None,
    where: str = "",
) -> ProxyProcess:
    """Start the proxy and wait for its start-up line; raises AssertionError if none.

    `wrapper` runs it through another command that execs it (`ip netns exec NS`), so
    the PID is still proxy64's; `where` names that place in the error."""
    argv = list(args)
    if "--socks" not in argv:
        argv += ["--socks", "127.0.0.1:0"]
    if "--http" not in argv:
        argv += ["--http", "127.0.0.1:0"]
    handle, name = tempfile.mkstemp(prefix="proxy64-", suffix=".log", dir=log_dir)
    log_path = Path(name)
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    process = subprocess.Popen(
        [*wrapper, *proxy64_command(command), *argv],
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=handle,
        env=full_env,
        cwd=REPO,
    )
    os.close(handle)
    proxy = ProxyProcess(process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in proxy.output().splitlines():
            line = raw
            if raw.startswith("{"):  # --log-format json: the line is the message
                with contextlib.suppress(ValueError):
                    line = json.loads(raw).get("message", "")
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
        f"proxy64 {command} {' '.join(argv)}{where} gave no start-up line "
        f"(exit {process.returncode}):\n{proxy.output()}"
    )


@contextmanager
def proxy_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    wrapper: Sequence[str] = (),
) -> Iterator[ProxyProcess]:
    """Context manager: start_proxy(), then stop by PID and remove the log, always; when
    the test fails inside, the proxy's log goes to stdout first (pytest shows it)."""
    proxy = start_proxy(*args, env=env, timeout=timeout, wrapper=wrapper)
    try:
        yield proxy
    except BaseException:
        print(f"--- what proxy64 (pid {proxy.pid}) logged until the failure ---")
        print(proxy.output())
        raise
    finally:
        proxy.stop()
        proxy.log_path.unlink(missing_ok=True)


def run_proxy64(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a proxy64 command to completion (e.g. `run -- curl ...`), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "proxy64", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ if env is None else env),
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )


def children(pid: int) -> set[int]:
    """The PIDs whose parent is pid (a supervisor's workers)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(p) for p in out.split()}


def socks_url_as(proxy: ProxyProcess, user: str, password: str) -> str:
    """The SOCKS5 URL with these credentials in it (curl -x)."""
    return proxy.socks_url.replace("socks5h://", f"socks5h://{user}:{password}@")


def http_url_as(proxy: ProxyProcess, user: str, password: str) -> str:
    """The HTTP proxy URL with these credentials in it (curl -x)."""
    return proxy.http_url.replace("http://", f"http://{user}:{password}@")


def wait_for_log(proxy: ProxyProcess, text: str, count: int = 1, timeout: float = 10) -> list[str]:
    """The log lines holding text once there are `count` of them, or what there is after
    `timeout` seconds (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in proxy.output().splitlines() if text in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)
