"""The second benchmark topology: the origin behind a veth whose receive work runs on the
other CPU, so that connect() returns EINPROGRESS and the handshake completes later, as on
a real network (on loopback, or a plain veth, every connect completes inside the syscall).

    bench/run.py --topology veth ...

builds two namespaces of its own (names carry the PID): `p64bc<pid>` holds the harness's
load generator and every proxy (each proxy pinned to CPU 0), `p64bo<pid>` holds the
origin; one veth pair joins them (both ends inside these namespaces, none in the root
namespace), with RPS steering each end's receive processing to CPU 1 (`rps_cpus` = 2).
The harness re-runs itself inside the client namespace, then deletes both namespaces.
Needs root and `ip`; this kernel has no qdiscs (no netem), which is why RPS is the tool.

connect_census() measures the premise: how many of N non-blocking connects complete
inside the syscall (0 of N here, N of N on loopback); the run records it in its meta.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

# Every connection of a run goes to one origin address and port: without TIME_WAIT reuse
# (on by default for loopback only) the ephemeral ports run out within a round.
NAMESPACE_SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv4.tcp_tw_reuse=1",
    "net.ipv4.ip_local_port_range=1024 65535",
)
RPS_OTHER_CPU = "2"  # CPU mask: receive processing on CPU 1; the proxy runs on CPU 0
PROXY_CPU = 0


@dataclass(frozen=True)
class Veth:
    client_ns: str
    origin_ns: str
    client_if: str  # in client_ns
    origin_if: str  # in origin_ns
    client_address: str
    origin_address: str  # the origin listens here; proxies dial it


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _rps(netns: str, interface: str) -> None:
    path = f"/sys/class/net/{interface}/queues/rx-0/rps_cpus"
    # `ip netns exec` mounts the namespace's own /sys: the device is visible there only
    _run("ip", "netns", "exec", netns, "sh", "-c", f"echo {RPS_OTHER_CPU} > {path}")


@contextlib.contextmanager
def veth_topology() -> Iterator[Veth]:
    pid = os.getpid()
    subnet = f"fd64:be:{pid & 0xFFFF:x}"
    veth = Veth(
        client_ns=f"p64bc{pid}",
        origin_ns=f"p64bo{pid}",
        client_if="bc0",
        origin_if="bo0",
        client_address=f"{subnet}::1",
        origin_address=f"{subnet}::2",
    )
    created: list[str] = []
    try:
        for netns in (veth.client_ns, veth.origin_ns):
            _run("ip", "netns", "add", netns)
            created.append(netns)
            _run("ip", "-n", netns, "link", "set", "lo", "up")
            _run("ip", "netns", "exec", netns, "sysctl", "-qw", *NAMESPACE_SYSCTLS)
        # born inside our namespaces: no end in the root namespace
        _run(
            "ip", "-n", veth.client_ns, "link", "add", veth.client_if, "type", "veth",
            "peer", "name", veth.origin_if, "netns", veth.origin_ns,
        )  # fmt: skip
        for netns, interface, address in (
            (veth.client_ns, veth.client_if, veth.client_address),
            (veth.origin_ns, veth.origin_if, veth.origin_address),
        ):
            _run("ip", "-n", netns, "addr", "add", f"{address}/64", "dev", interface, "nodad")
            _run("ip", "-n", netns, "link", "set", interface, "up")
            _rps(netns, interface)
        yield veth
    finally:
        for netns in created:
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


def connect_census(host: str, port: int, count: int = 200) -> int:
    """How many of `count` non-blocking connects to host:port completed inside connect(2)
    (from this process, pinned to PROXY_CPU while it runs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    before = os.sched_getaffinity(0)
    completed = 0
    try:
        os.sched_setaffinity(0, {PROXY_CPU})
        for _ in range(count):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                err = sock.connect_ex((host, port))
                if err == 0:
                    completed += 1
                elif err == errno.EINPROGRESS:
                    try:
                        sock.getpeername()  # what proxy64's dialer asks right after connect()
                        completed += 1
                    except OSError:
                        pass
    finally:
        os.sched_setaffinity(0, before)
    return completed
