"""The proxies the benchmark starts and measures: proxy64 and its peers, one process tree each.

Each server is started by the harness on loopback ports it picked, in its own session
(so its forked workers share its process group), and stopped by that PID: SIGTERM, then
SIGKILL to the group if anything is left. CPU and memory are read from /proc for the
whole process tree (dante and `serve --workers N` fork workers):
  CPU    utime+stime of every live process + cutime+cstime of the root (reaped children)
  memory VmRSS summed over the tree
Peers: microsocks (SOCKS5), dante (SOCKS5), tinyproxy (CONNECT + forwarding),
pproxy (SOCKS5 + CONNECT + forwarding on one port, without uvloop); reference
(bench/reference_relay.py: a minimal trio splice relay, SOCKS5 to literals only);
reference-http (bench/reference_http.py: a minimal trio + h11 forwarding proxy, the
stack's own floor for forwarding).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import Target

CLK_TCK = os.sysconf("SC_CLK_TCK")
PIN_CPU: int | None = None  # every server pinned to this CPU (the veth topology: 0)
DANTE_EXTERNAL = "lo"  # the interface dante dials from
# `proxy64-base`: proxy64 from another tree (a directory holding a `proxy64` package, e.g.
# `git archive COMMIT proxy64 | tar -x -C DIR`), measured in the same run as this one
BASELINE: Path | None = None
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_tool(name: str) -> str | None:
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    for directory in ("/usr/sbin", "/sbin"):
        if os.path.exists(f"{directory}/{name}"):
            return f"{directory}/{name}"
    return shutil.which(name)


# --- /proc sampling ----------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    user, system = tree_cpu_split(root)
    return user + system


def tree_cpu_split(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process tree, as tree_cpu_seconds() counts them."""
    user = system = 0
    for pid in tree_pids(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user += int(fields[11])  # utime (stat field 14)
        system += int(fields[12])  # stime (15)
        if pid == root:
            user += int(fields[13])  # cutime: reaped workers
            system += int(fields[14])  # cstime
    return user / CLK_TCK, system / CLK_TCK


@contextlib.contextmanager
def pinned(roots: list[int], cpu: int) -> Iterator[None]:
    """Run the process trees of `roots` (0: this process) on one CPU, then put back each
    process's own CPU set. A process that ended meanwhile is skipped."""
    saved: dict[int, set[int]] = {}
    try:
        for root in roots:
            for pid in tree_pids(root) if root else [0]:
                with contextlib.suppress(OSError):
                    saved[pid] = os.sched_getaffinity(pid)
                    os.sched_setaffinity(pid, {cpu})
        yield
    finally:
        for pid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)


def tree_rss_kib(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


# --- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    """One proxy process tree serving one or more target kinds on loopback ports."""

    name: str
    kinds: tuple[str, ...]  # socks5 / connect / http, in the order targets are listed
    build: Callable[[Server], list[str]]  # argv, may write config files into workdir
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    last_pid: int = 0  # the PID of the latest start, kept after stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def targets(self) -> list[Target]:
        return [
            Target(f"{self.name}/{kind}", kind, ("127.0.0.1", self.ports[kind]), self.name)
            for kind in self.kinds
        ]

    def start(self, timeout: float = 15.0) -> None:
        argv = self.build(self)
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 (closed in stop)
        cpu = PIN_CPU
        self.proc = subprocess.Popen(
            argv,
            preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}),  # noqa: PLW1509
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()
        self.last_pid = self.proc.pid
        deadline = time.monotonic() + timeout
        for port in set(self.ports.values()):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}; see "
                        f"{self.workdir / (self.name + '.log')}"
                    )
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not listen on {port} in {timeout}s")
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        # the process group is the one start_new_session made for this PID
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _microsocks(server: Server) -> list[str]:
    return [
        find_tool("microsocks") or "microsocks",
        "-i",
        "127.0.0.1",
        "-p",
        str(server.ports["socks5"]),
    ]


def _dante(server: Server) -> list[str]:
    conf = server.workdir / "danted.conf"
    conf.write_text(
        f"""logoutput: stderr
internal: 127.0.0.1 port = {server.ports["socks5"]}
external: {DANTE_EXTERNAL}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 0/0 to: 0/0 }}
socks pass {{ from: 0/0 to: 0/0 command: connect }}
"""
    )
    return [find_tool("danted") or "danted", "-f", str(conf)]


def _tinyproxy(server: Server) -> list[str]:
    conf = server.workdir / "tinyproxy.conf"
    port = server.ports["connect"]
    conf.write_text(
        f"""Port {port}
Listen 127.0.0.1
Timeout 600
MaxClients 12000
LogLevel Critical
Allow 127.0.0.1
DisableViaHeader Yes
"""
    )
    return [find_tool("tinyproxy") or "tinyproxy", "-d", "-c", str(conf)]


def _pproxy(server: Server) -> list[str]:
    port = server.ports["socks5"]
    return [find_tool("pproxy") or "pproxy", "-l", f"socks5+http://127.0.0.1:{port}"]


PROXY64_WORKERS = 1
PROXY64_MAX_CONNECTIONS = 12000


def _proxy64(server: Server) -> list[str]:
    if server.name == "proxy64-base":
        assert BASELINE is not None
        launch = [sys.executable, str(REPO / "bench" / "tree_main.py"), str(BASELINE)]
    else:
        launch = [sys.executable, "-m", "proxy64"]
    argv = [
        *launch,
        "serve",
        "--socks",
        f"127.0.0.1:{server.ports['socks5']}",
        "--http",
        f"127.0.0.1:{server.ports['connect']}",
        # an explicit prefix: no RFC 7050 discovery at start-up (destinations are IPv6
        # literals here, so the prefix and egress are never used on the measured path)
        "--nat64-prefix",
        "64:ff9b::/96",
        "--egress",
        "nat64",
        "--log-level",
        "error",
        # like tinyproxy's MaxClients, raised above the idle-tunnel counts measured
        "--max-connections",
        str(PROXY64_MAX_CONNECTIONS),
        # every load generator connects from 127.0.0.1: one client address here
        "--max-client-connections",
        str(PROXY64_MAX_CONNECTIONS),
    ]
    if PROXY64_WORKERS > 1:
        argv += ["--workers", str(PROXY64_WORKERS)]
    return argv


def _reference(server: Server) -> list[str]:
    # bench/reference_relay.py: a minimal trio splice relay, what a relay reaches here
    script = str(REPO / "bench" / "reference_relay.py")
    return [sys.executable, script, "--listen", "127.0.0.1", "--port", str(server.ports["socks5"])]


def _reference_http(server: Server) -> list[str]:
    # bench/reference_http.py: trio and h11 alone, what proxy64's stack costs per request
    script = str(REPO / "bench" / "reference_http.py")
    return [sys.executable, script, "--listen", "127.0.0.1", "--port", str(server.ports["http"])]


def _available(name: str) -> bool:
    if name in ("reference", "reference-http"):
        return True
    if name == "proxy64-base":
        return BASELINE is not None and (BASELINE / "proxy64" / "__main__.py").exists()
    if name == "proxy64":
        try:
            import proxy64.commands.serve  # noqa: F401
        except ImportError:
            return False
        return True
    tool = {"dante": "danted"}.get(name, name)
    return find_tool(tool) is not None


SERVERS: dict[str, tuple[tuple[str, ...], Callable[[Server], list[str]], bool]] = {
    # name: (kinds, argv builder, one port serves every kind)
    "proxy64": (("socks5", "connect", "http"), _proxy64, False),
    "proxy64-base": (("socks5", "connect", "http"), _proxy64, False),
    "microsocks": (("socks5",), _microsocks, True),
    "dante": (("socks5",), _dante, True),
    "tinyproxy": (("connect", "http"), _tinyproxy, True),
    "pproxy": (("socks5", "connect", "http"), _pproxy, True),
    "reference": (("socks5",), _reference, True),
    "reference-http": (("http",), _reference_http, True),
}


def make_server(name: str, workdir: Path) -> Server:
    kinds, build, shared = SERVERS[name]
    if shared:
        port = free_port()
        ports = dict.fromkeys(kinds, port)
    else:
        # proxy64: SOCKS5 on one port, HTTP (CONNECT and forwarding) on another
        ports = {"socks5": free_port()}
        ports["connect"] = ports["http"] = free_port()
    return Server(name, kinds, build, workdir, ports)


def available_servers(names: list[str]) -> tuple[list[str], list[str]]:
    """Split names into (installed, missing)."""
    have = [n for n in names if _available(n)]
    return have, [n for n in names if n not in have]


@contextlib.contextmanager
def recording(argv: list[str] | None, settle: float = 1.0) -> Iterator[None]:
    """A recorder attached to a running process (py-spy, perf record), started with argv
    (None: nothing to record) and given `settle` seconds to attach; when the block ends,
    SIGINT makes it write its file and exit, and a failed block kills it instead."""
    if argv is None:
        yield
        return
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        yield
    except BaseException:
        recorder.kill()
        recorder.wait()
        raise
    recorder.send_signal(signal.SIGINT)
    recorder.wait(30)
