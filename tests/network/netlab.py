"""Builds and tears down the NAT64 test network: three network namespaces, two veth pairs,
tayga, NSD, Unbound (DNS64) and the origin servers. Needs root; see tests/network/conftest.py.

Invariants:
- every veth end lives in a namespace created here (checked by assert_no_root_veth), so no
  packet can leave the machine whatever address a test dials;
- names are unique per run (p64n-<pid>-<n>-<role>), so parallel runs do not collide;
- every process is started here, remembered by PID, and stopped by PID in destroy(), which
  also runs at interpreter exit for a lab a fixture could not finalize.

Topology and addresses: tests/network/topology.py and docs/nat64-network.md. Config
rendering: configs.py; acting inside a namespace and stale clean-up: netns.py.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Network
from pathlib import Path

from tests.helpers.requirements import tool_path
from tests.network import topology as T
from tests.network.configs import (
    DNS_ENTRYPOINT,
    NAT64_ENTRYPOINT,
    ORIGIN_ENTRYPOINT,
    ORIGIN_SERVER,
    unbound_config,
)
from tests.network.netns import run_in_netns

START_TIMEOUT = 10.0  # seconds for a daemon to answer after start
STOP_TIMEOUT = 3.0  # seconds between SIGTERM and SIGKILL
COMMAND_TIMEOUT = 15.0  # seconds for one ip/sysctl/curl command

_counter = itertools.count()
_live_labs: list[Netlab] = []


def _sbin_path() -> str:
    """PATH for the entrypoints: tayga, nsd and ip live in /usr/sbin."""
    return f"PATH=/usr/sbin:/sbin:{os.environ.get('PATH', '/usr/bin:/bin')}"


@dataclass
class Netlab:
    """One NAT64 network. create() builds it, destroy() removes every trace of it."""

    client: str
    gateway: str
    origin: str
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    prefix: IPv6Network | None = None
    created: bool = False

    @classmethod
    def new(cls) -> Netlab:
        base = f"p64n-{os.getpid()}-{next(_counter)}"
        workdir = Path(tempfile.mkdtemp(prefix=f"{base}-"))
        return cls(f"{base}-c", f"{base}-g", f"{base}-o", workdir)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.client, self.gateway, self.origin)

    # --- commands ------------------------------------------------------------------
    def run(
        self,
        netns: str | None,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        result = subprocess.run(full, check=False, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(full)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def ip(self, netns: str, *args: str) -> None:
        self.run(None, ["ip", "-n", netns, *args])

    def sysctl(self, netns: str, *settings: str) -> None:
        self.run(netns, ["sysctl", "-q", "-w", *settings])

    def spawn(self, name: str, netns: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a process in netns, output to workdir/<name>.log; stopped by destroy()."""
        self.stop(name)
        log = open(self.log_path(name), "ab")  # noqa: SIM115 (closed with the process)
        try:
            process = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],  # ip execs argv: same PID
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.processes[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def expect_running(self, name: str) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{name} is not running; its log:\n{self.log(name)}")

    def wait_until(self, name: str, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.expect_running(name)
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name}: {what} not ready in {START_TIMEOUT}s; log:\n{self.log(name)}")

    def tcp_open(self, netns: str, host: str, port: int) -> bool:
        def attempt() -> bool:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
            except OSError:
                return False
            return True

        return run_in_netns(netns, attempt)

    def dns_answers(self, netns: str, server: str, qname: str) -> bool:
        import dns.exception
        import dns.message
        import dns.query

        def attempt() -> bool:
            try:
                query = dns.message.make_query(qname, "A")
                dns.query.udp(query, server, timeout=0.5)
            except (OSError, dns.exception.DNSException):
                return False
            return True

        return run_in_netns(netns, attempt)

    # --- building --------------------------------------------------------------------
    def create(self) -> None:
        _live_labs.append(self)
        for netns in self.namespaces:
            self.run(None, ["ip", "netns", "add", netns])
        self.created = True
        c, g, o = self.namespaces
        for netns in self.namespaces:
            self.ip(netns, "link", "set", "lo", "up")
        # veths are born inside our namespaces: never an end in the root namespace
        self.ip(c, "link", "add", "gw0", "type", "veth", "peer", "name", "cl0", "netns", g)
        self.ip(o, "link", "add", "gw0", "type", "veth", "peer", "name", "or0", "netns", g)

        # client: IPv6 only, default route via the gateway
        self.sysctl(c, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        self.ip(c, "addr", "add", f"{T.CLIENT6}/64", "dev", "gw0", "nodad")
        self.ip(c, "link", "set", "gw0", "up")
        self.ip(c, "-6", "route", "add", "default", "via", str(T.GATEWAY6))

        # gateway: dual stack, forwarding, the DNS servers and the IPv6 origin on cl0
        self.sysctl(
            g,
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.ip_forward=1",
        )
        for address in (T.GATEWAY6, T.NSD6, T.UNBOUND6, T.ORIGIN6, T.DEAD_DNS6):
            self.ip(g, "addr", "add", f"{address}/64", "dev", "cl0", "nodad")
        self.ip(g, "addr", "add", f"{T.GATEWAY4}/{T.ORIGIN_NET4.prefixlen}", "dev", "or0")
        self.ip(g, "link", "set", "cl0", "up")
        self.ip(g, "link", "set", "or0", "up")
        for extra in (T.PRIVATE_ORIGIN4, T.SHARED_ORIGIN4):
            self.ip(g, "route", "add", f"{extra}/32", "via", str(T.ORIGIN4))

        # origin: IPv4 only (RFC 4213 not here: IPv6 off), routes the pool back via tayga
        self.sysctl(
            o,
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.lo.disable_ipv6=1",
        )
        self.ip(o, "addr", "add", f"{T.ORIGIN4}/{T.ORIGIN_NET4.prefixlen}", "dev", "gw0")
        for extra in (T.PRIVATE_ORIGIN4, T.SHARED_ORIGIN4):
            self.ip(o, "addr", "add", f"{extra}/32", "dev", "gw0")
        self.ip(o, "link", "set", "gw0", "up")
        # the route back to tayga's pool is added by docker/origin/entrypoint.sh

        # the client's resolv.conf names the network's DNS64, as a real IPv6-only network would
        resolv_dir = Path("/etc/netns") / c
        resolv_dir.mkdir(parents=True, exist_ok=True)
        (resolv_dir / "resolv.conf").write_text(f"nameserver {T.UNBOUND6}\n")
        # tayga's TUN device and routes come from docker/nat64/entrypoint.sh (use_prefix)

        self.start_nsd()
        self.start_origins()

    def assert_no_root_veth(self) -> None:
        """Each veth's peer sits in one of our namespaces, none in the root namespace."""
        ours = set(self.namespaces)
        for netns, device in (
            (self.client, "gw0"),
            (self.gateway, "cl0"),
            (self.gateway, "or0"),
            (self.origin, "gw0"),
        ):
            shown = self.run(None, ["ip", "-n", netns, "-o", "link", "show", device]).stdout
            words = shown.split()
            assert "link-netns" in words, f"{netns}/{device} has no peer namespace: {shown}"
            peer = words[words.index("link-netns") + 1]
            assert peer in ours, f"{netns}/{device} peers into {peer}, not one of ours"

    def start_nsd(self) -> None:
        """NSD through the compose demo's entrypoint (same template, same zone files)."""
        run_dir = self.workdir / "nsd"
        self.spawn(
            "nsd",
            self.gateway,
            [
                "env",
                f"LISTEN={T.NSD6}",
                f"RUN_DIR={run_dir}",
                _sbin_path(),
                "sh",
                str(DNS_ENTRYPOINT),
            ],
        )
        self.wait_until("nsd", lambda: self.dns_answers(self.gateway, str(T.NSD6), T.V4ONLY), "DNS")

    def start_origins(self) -> None:
        python = sys.executable
        # the compose demo's entrypoint: routes the pool back via tayga, then runs the server
        self.spawn(
            "origin4",
            self.origin,
            [
                "env",
                f"DYNAMIC_POOL={T.DYNAMIC_POOL}",
                f"NAT64_IPV4={T.GATEWAY4}",
                f"PYTHON={python}",
                "sh",
                str(ORIGIN_ENTRYPOINT),
                "--http",
                f"0.0.0.0:{T.HTTP_PORT}",
                "--udp",
                f"0.0.0.0:{T.UDP_ECHO_PORT}",
                "--label",
                "v4",
            ],
        )
        self.spawn(
            "origin6",
            self.gateway,
            [python, str(ORIGIN_SERVER), "--http", f"[{T.ORIGIN6}]:{T.HTTP_PORT}", "--label", "v6"],
        )
        self.wait_until(
            "origin4",
            lambda: self.tcp_open(self.origin, str(T.ORIGIN4), T.HTTP_PORT),
            "HTTP",
        )
        self.wait_until(
            "origin6",
            lambda: self.tcp_open(self.gateway, str(T.ORIGIN6), T.HTTP_PORT),
            "HTTP",
        )

    def use_prefix(self, prefix: IPv6Network) -> None:
        """(Re)start tayga and Unbound's DNS64 for prefix; a no-op if already in use."""
        if prefix == self.prefix and "tayga" in self.processes and "unbound" in self.processes:
            return
        self.stop("tayga")
        self.stop("unbound")
        g = self.gateway
        if self.prefix is not None:
            self.run(None, ["ip", "-n", g, "-6", "route", "del", str(self.prefix)], check=False)
        self.prefix = None
        data_dir = self.workdir / "tayga"
        shutil.rmtree(data_dir, ignore_errors=True)  # forget the old prefix's mappings
        # the compose demo's nat64 entrypoint: renders the shared template, creates the TUN
        # device (idempotent), routes prefix and pool into it, then execs tayga (same PID)
        self.spawn(
            "tayga",
            g,
            [
                "env",
                f"TUN_DEVICE={T.TUN_DEVICE}",
                f"IPV4_ADDR={T.TAYGA_IPV4}",
                f"PREFIX={prefix}",
                f"DYNAMIC_POOL={T.DYNAMIC_POOL}",
                f"DATA_DIR={data_dir}",
                f"TAYGA_CONF={self.workdir / 'tayga.conf'}",
                _sbin_path(),
                "sh",
                str(NAT64_ENTRYPOINT),
            ],
        )
        self.wait_until("tayga", lambda: self._is_tayga(self.processes["tayga"].pid), "tayga")

        run_dir = self.workdir / "unbound"
        run_dir.mkdir(exist_ok=True)
        unbound_conf = run_dir / "unbound.conf"
        unbound_conf.write_text(unbound_config(prefix, str(run_dir)))
        self.spawn("unbound", g, [tool_path("unbound"), "-d", "-c", str(unbound_conf)])
        self.wait_until(
            "unbound",
            lambda: self.dns_answers(self.client, str(T.UNBOUND6), T.V4ONLY),
            "DNS64",
        )
        self.expect_running("tayga")
        self.prefix = prefix

    @staticmethod
    def _is_tayga(pid: int) -> bool:
        """The entrypoint has exec'd tayga (routes are in place by then)."""
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "tayga"
        except OSError:
            return False

    # --- client side helpers -----------------------------------------------------------
    def curl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """curl in the client namespace; --max-time keeps a hang a failure."""
        argv = [tool_path("curl"), "-sS", "--max-time", str(timeout - 2), *args]
        return self.run(self.client, argv, check=False, timeout=timeout)

    # --- teardown ----------------------------------------------------------------------
    def destroy(self) -> None:
        for name in list(self.processes):
            with contextlib.suppress(Exception):
                self.stop(name)
        if self.created:
            for netns in self.namespaces:
                # anything still inside was started by these tests (a proxy64 a failed test
                # did not stop, a daemon's child): stop it by PID before the namespace goes
                pids = self.run(None, ["ip", "netns", "pids", netns], check=False).stdout
                for pid in pids.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                self.run(None, ["ip", "netns", "del", netns], check=False)
            shutil.rmtree(Path("/etc/netns") / self.client, ignore_errors=True)
            self.created = False
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self in _live_labs:
            _live_labs.remove(self)


@atexit.register
def _destroy_leftovers() -> None:
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.destroy()
