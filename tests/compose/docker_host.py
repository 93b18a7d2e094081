"""A Docker daemon for the compose demo test: the one already running, or our own.

`open_docker(workdir)` yields a `Docker` whose `env` points clients at the daemon. When no
daemon answers, it starts Debian's dockerd as root with its data, state, pid file and
socket under `workdir` (nothing in /var/lib/docker or /run/docker.sock), and at the end
stops it by PID and puts back what dockerd changes on the host: the forwarding sysctls,
bridge netfilter, the iptables FORWARD policy and DOCKER chains, the docker0 bridge.
dockerd picks its storage driver itself (overlay2 on ext4; vfs where overlay cannot work).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.requirements import tool_path

START_TIMEOUT = 60.0  # seconds for dockerd to answer on its socket
STOP_TIMEOUT = 60.0  # seconds for dockerd to stop its containers and containerd
# Host settings dockerd turns on (forwarding for its bridges, br_netfilter for its rules).
HOST_SYSCTLS = (
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
)
DOCKER_CHAIN = "DOCKER"  # every chain dockerd makes starts with this


@dataclass
class Docker:
    cli: str
    env: dict[str, str]
    version: str
    started: bool  # True: our own dockerd, removed whole at the end
    log: Path | None = None

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args], env=self.env, capture_output=True, text=True, check=False,
            timeout=timeout,
        )  # fmt: skip

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "inspect", tag).returncode == 0


def _answers(cli: str, env: dict[str, str]) -> str | None:
    """The server version when a daemon answers at env's DOCKER_HOST (or the default)."""
    with suppress(subprocess.TimeoutExpired):
        probe = subprocess.run(
            [cli, "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        if probe.returncode == 0 and probe.stdout.strip():
            return probe.stdout.strip()
    return None


@dataclass
class HostState:
    """What dockerd changes on the host, read before it starts."""

    sysctls: dict[str, str]
    iptables: dict[str, str]  # tool -> filter FORWARD policy; only tools without DOCKER chains
    had_docker0: bool


def _iptables_tools() -> list[str]:
    search = os.pathsep.join(("/usr/sbin", "/sbin", os.environ.get("PATH", "")))
    return [path for name in ("iptables", "ip6tables") if (path := shutil.which(name, path=search))]


def _forward_policy(tool: str) -> str | None:
    out = subprocess.run([tool, "-w", "-S", "FORWARD"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    return None


def _has_docker_chains(tool: str) -> bool:
    out = subprocess.run([tool, "-w", "-S"], capture_output=True, text=True, check=False)
    return any(line.startswith(f"-N {DOCKER_CHAIN}") for line in out.stdout.splitlines())


def read_host_state() -> HostState:
    sysctls = {path: Path(path).read_text().strip() for path in HOST_SYSCTLS if Path(path).exists()}
    iptables = {}
    for tool in _iptables_tools():
        policy = _forward_policy(tool)
        if policy is not None and not _has_docker_chains(tool):
            iptables[tool] = policy
    had_docker0 = Path("/sys/class/net/docker0").exists()
    return HostState(sysctls, iptables, had_docker0)


def _remove_docker_rules(tool: str) -> None:
    """Delete dockerd's rules and chains: jumps into DOCKER*, docker0 rules, the chains."""
    for table in ("filter", "nat"):
        out = subprocess.run(
            [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        chains = [line.split()[1] for line in out if line.startswith(f"-N {DOCKER_CHAIN}")]
        for line in out:
            words = line.split()
            ours = DOCKER_CHAIN in line or "docker0" in words
            if words[:1] == ["-A"] and words[1] not in chains and ours:
                subprocess.run([tool, "-w", "-t", table, "-D", *words[1:]], check=False)
        for chain in chains:
            subprocess.run([tool, "-w", "-t", table, "-F", chain], check=False)
        for chain in chains:
            subprocess.run([tool, "-w", "-t", table, "-X", chain], check=False)


def restore_host_state(state: HostState) -> None:
    for path, value in state.sysctls.items():
        with suppress(OSError):
            if Path(path).read_text().strip() != value:
                Path(path).write_text(value + "\n")
    for tool, policy in state.iptables.items():
        _remove_docker_rules(tool)
        subprocess.run([tool, "-w", "-P", "FORWARD", policy], check=False)
    if not state.had_docker0 and Path("/sys/class/net/docker0").exists():
        subprocess.run(["ip", "link", "delete", "docker0"], check=False)


def _stop(process: subprocess.Popen[bytes], exec_root: Path) -> None:
    """SIGTERM dockerd (it stops its containers and its containerd), SIGKILL after a wait."""
    containerd_pid = exec_root / "containerd" / "containerd.pid"
    pid = int(containerd_pid.read_text()) if containerd_pid.exists() else None
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    if pid is not None:  # left behind only when dockerd had to be killed
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_below(path: Path) -> None:
    """Lazy-unmount anything still mounted under path (overlay layers, netns files)."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(str(path))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@contextmanager
def open_docker(workdir: Path) -> Iterator[Docker]:
    """The running Docker daemon if one answers; otherwise our own dockerd in workdir."""
    cli = tool_path("docker")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    version = _answers(cli, env)
    if version is not None:
        yield Docker(cli, env, version, started=False)
        return
    dockerd = tool_path("dockerd")
    data_root, exec_root = workdir / "data", workdir / "exec"
    socket = workdir / "docker.sock"
    log = workdir / "dockerd.log"
    env["DOCKER_HOST"] = f"unix://{socket}"
    state = read_host_state()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                dockerd,
                "--data-root", str(data_root),
                "--exec-root", str(exec_root),
                "--pidfile", str(workdir / "docker.pid"),
                "--host", f"unix://{socket}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C to pytest must not reach dockerd before we stop it
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while (version := _answers(cli, env)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"dockerd did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.5)
        yield Docker(cli, env, version, started=True, log=log)
    finally:
        _stop(process, exec_root)
        restore_host_state(state)
        _unmount_below(workdir)
        subprocess.run(["rm", "-rf", str(data_root), str(exec_root)], check=False)
