"""PREF64 (RFC 8781) in real Router Advertisements, picked up by proxy64 running as `nobody`.

Two namespaces joined by a veth: a "router" that sends RAs (built with scapy: Debian 12's
radvd 2.19 has no PREF64 setting, radvd.conf(5) lists none) and a "host" where proxy64
serves with --nat64-prefix auto, the kernel accepting RAs on its interface (accept_ra=2).
No translator is needed to see which prefix a dial used: the router namespace owns the
addresses 192.0.2.1 maps to under both announced prefixes, and its server answers each
connection with the address it was reached at, then echoes.

proxy64 drops root before it serves: the interpreter lives under /root, which `nobody`
cannot read, so a launcher imports proxy64 as root, then setuid()s to nobody (every
capability goes with it; the test checks /proc/PID/status) and runs the CLI.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.proxy_process import STARTUP_RE, ProxyProcess
from tests.helpers.requirements import require_module, require_root, require_tool
from tests.helpers.socks5_client import Socks5Failure, connect
from tests.network.configs import REPO
from tests.network.netns import socket_in

pytestmark = pytest.mark.network

ORIGIN4 = "192.0.2.1"
PORT = 8080
PREFIX_A = "2001:db8:a::/96"
PREFIX_B = "2001:db8:b::/96"
REACHED_A = "2001:db8:a::c000:201"
REACHED_B = "2001:db8:b::c000:201"
ROUTER_LL = "fe80::1"
WAIT = 15.0  # seconds for proxy64 to react to an RA (RAs are repeated until it does)

_counter = itertools.count(900)

LAUNCHER = """
import importlib, os, pkgutil, pwd, sys
import proxy64, proxy64.cli
for info in pkgutil.walk_packages(proxy64.__path__, "proxy64."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
import dns.rdtypes.IN.A, dns.rdtypes.IN.AAAA, dns.rdtypes.ANY.CNAME, dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.DNAME, dns.rdtypes.ANY.PTR, dns.rdtypes.ANY.OPT
import encodings.idna, json, shutil, subprocess
user = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
sys.exit(proxy64.cli.main(sys.argv[1:]))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=15)


@dataclass
class Link:
    host: str  # namespace where proxy64 runs and RAs are accepted
    router: str  # namespace that sends RAs and owns the origin addresses
    workdir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


def _origin(listener: socket.socket, stop: threading.Event) -> None:
    """Answer each connection with the address it reached, then echo (one thread each)."""

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            conn.sendall(f"{conn.getsockname()[0]}\n".encode())
            with contextlib.suppress(OSError):
                while data := conn.recv(4096):
                    conn.sendall(data)

    listener.settimeout(0.2)
    with listener:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()


@pytest.fixture(scope="module")
def link() -> Iterator[Link]:
    require_root()
    require_tool("ip")
    require_module("scapy", "scapy builds the Router Advertisements")
    base = f"p64n-{os.getpid()}-{next(_counter)}"
    lab = Link(f"{base}-c", f"{base}-g", Path(tempfile.mkdtemp(prefix=f"{base}-")))
    created: list[str] = []
    try:
        for name in (lab.host, lab.router):
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", lab.host, "link", "add", "ra0", "type", "veth", "peer", "name", "rt0",
           "netns", lab.router)  # fmt: skip
        host_sysctl = (
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.forwarding=0",
            "net.ipv6.conf.ra0.accept_dad=0",
            "net.ipv6.conf.ra0.accept_ra=2",  # RFC 4861 RAs processed, PREF64 passed on
        )
        subprocess.run(["ip", "netns", "exec", lab.host, "sysctl", "-qw", *host_sysctl],
                       check=True, timeout=15)  # fmt: skip
        ip("-n", lab.host, "addr", "add", "2001:db8:1::2/64", "dev", "ra0", "nodad")
        ip("-n", lab.host, "link", "set", "ra0", "up")
        ip("-n", lab.host, "-6", "route", "add", "2001:db8::/32", "via", "2001:db8:1::1")
        ip("-n", lab.router, "addr", "add", f"{ROUTER_LL}/64", "dev", "rt0", "nodad")
        ip("-n", lab.router, "addr", "add", "2001:db8:1::1/64", "dev", "rt0", "nodad")
        for reached in (REACHED_A, REACHED_B):
            ip("-n", lab.router, "addr", "add", f"{reached}/128", "dev", "lo", "nodad")
        ip("-n", lab.router, "link", "set", "rt0", "up")
        listener = socket_in(lab.router, socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::", PORT))
        listener.listen(16)
        thread = threading.Thread(target=_origin, args=(listener, lab.stop), daemon=True)
        thread.start()
        lab.threads.append(thread)
        yield lab
    finally:
        lab.stop.set()
        for thread in lab.threads:
            thread.join(5)
        for name in created:
            subprocess.run(["ip", "netns", "pids", name], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        for path in sorted(lab.workdir.glob("*")):
            path.unlink()
        lab.workdir.rmdir()


def send_ra(lab: Link, *pref64: tuple[str, int]) -> None:
    """One RA from the router with a PREF64 option per (prefix, lifetime in seconds)."""
    from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPREF64, IPv6
    from scapy.layers.l2 import Ether

    packet = Ether(dst="33:33:00:00:00:01", src="02:00:00:00:00:01") / IPv6(
        src=ROUTER_LL, dst="ff02::1", hlim=255
    ) / ICMPv6ND_RA(routerlifetime=0)  # fmt: skip
    for prefix, lifetime in pref64:
        address, length = prefix.split("/")
        plc = (96, 64, 56, 48, 40, 32).index(int(length))
        packet = packet / ICMPv6NDOptPREF64(prefix=address, plc=plc, scaledlifetime=lifetime // 8)
    frame = bytes(packet)
    sock = socket_in(lab.router, socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind(("rt0", 0))
        sock.send(frame)


def start_unprivileged_proxy(lab: Link, *args: str) -> ProxyProcess:
    argv = ["serve", "--socks", "127.0.0.1:0", "--http", "off", *args]
    handle, name = tempfile.mkstemp(prefix="proxy64-", suffix=".log", dir=lab.workdir)
    process = subprocess.Popen(
        ["ip", "netns", "exec", lab.host, sys.executable, "-c", LAUNCHER, *argv],
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=handle,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1"),
        cwd=REPO,
    )
    os.close(handle)
    proxy = ProxyProcess(process, Path(name))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and process.poll() is None:
        for line in proxy.output().splitlines():
            match = STARTUP_RE.match(line)
            if match:
                proxy.startup_line = line
                proxy.socks = ("127.0.0.1", int(match["socks"].rsplit(":", 1)[1]))
                proxy.prefix, proxy.egress = match["prefix"], match["egress"]
                proxy.why = match["why"]
                return proxy
        time.sleep(0.05)
    proxy.stop()
    raise AssertionError(f"no start-up line:\n{proxy.output()}")


def announce_until(lab: Link, proxy: ProxyProcess, pattern: str, *pref64: tuple[str, int]) -> None:
    """Send the RA every 0.3 s (as a router repeats them) until the log matches."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        send_ra(lab, *pref64)
        if re.search(pattern, proxy.output()):
            return
        time.sleep(0.3)
    raise AssertionError(f"proxy64 never logged {pattern!r}:\n{proxy.output()}")


@contextlib.contextmanager
def tunnel(lab: Link, proxy: ProxyProcess) -> Iterator[tuple[socket.socket, str]]:
    """A SOCKS5 CONNECT to 192.0.2.1:8080 through the proxy; (socket, address reached)."""
    assert proxy.socks is not None
    sock = socket_in(lab.host, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(8)
        sock.connect(proxy.socks)
        connect(sock, ORIGIN4, PORT)
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            assert chunk, "the origin closed before naming the address"
            line += chunk
        yield sock, line.decode().strip()


def echo(sock: socket.socket, text: bytes) -> bytes:
    sock.sendall(text)
    got = b""
    while len(got) < len(text):
        chunk = sock.recv(len(text) - len(got))
        assert chunk, "tunnel closed"
        got += chunk
    return got


def credentials(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_rfc8781_pref64_followed_by_an_unprivileged_proxy(link: Link) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    proxy = start_unprivileged_proxy(link, "--dns", "127.0.0.1:9", "--nat64-prefix", "auto")
    try:
        status = credentials(proxy.pid)
        assert status["Uid"].split() == [str(nobody)] * 4, status["Uid"]
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        # no RA yet, no DNS64: the start-up fallback
        assert (proxy.prefix, proxy.egress) == ("64:ff9b::/96", "embedded"), proxy.startup_line
        assert proxy.why.startswith("none found: no RA with PREF64 within"), proxy.why

        announce_until(link, proxy, rf"-> {PREFIX_A} \(PREF64 from RA on ra0\)", (PREFIX_A, 600))
        with tunnel(link, proxy) as (first, reached):
            assert reached == REACHED_A
            assert echo(first, b"before") == b"before"

            # the router renumbers: B announced, A withdrawn (lifetime 0) in one RA
            announce_until(
                link, proxy, rf"-> {PREFIX_B} \(PREF64 from RA on ra0\)",
                (PREFIX_A, 0), (PREFIX_B, 600),
            )  # fmt: skip
            with tunnel(link, proxy) as (second, reached_now):
                assert reached_now == REACHED_B  # new connections follow at once
                assert echo(second, b"new") == b"new"
            assert echo(first, b"still") == b"still"  # the open tunnel keeps its address

            # lifetime 0 withdraws B: nothing left, back to the start-up fallback
            announce_until(link, proxy, "no NAT64 prefix found any more", (PREFIX_B, 0))
            with pytest.raises(Socks5Failure), tunnel(link, proxy):
                pass  # embedded egress dials 192.0.2.1 over IPv4, which this host lacks
            assert echo(first, b"after") == b"after"
        output = proxy.output()
        assert output.count("NAT64 prefix changed") == 3, output
        assert "Traceback" not in output
    finally:
        proxy.stop()


@contextlib.contextmanager
def router_repeating(lab: Link, *pref64: tuple[str, int]) -> Iterator[None]:
    """RAs every 0.1 s while the block runs (a router right after it came up)."""
    stop = threading.Event()

    def repeat() -> None:
        while not stop.is_set():
            send_ra(lab, *pref64)
            stop.wait(0.1)

    thread = threading.Thread(target=repeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_rfc9872_startup_line_and_discover_name_pref64_from_ra(link: Link) -> None:
    with router_repeating(link, (PREFIX_A, 600)):
        proxy = start_unprivileged_proxy(link, "--dns", "127.0.0.1:9", "--nat64-prefix", "auto")
        try:
            assert (proxy.prefix, proxy.egress) == (PREFIX_A, "nat64"), proxy.startup_line
            assert proxy.why == "PREF64 from RA on ra0"
            with tunnel(link, proxy) as (_, reached):
                assert reached == REACHED_A
        finally:
            proxy.stop()
        done = subprocess.run(
            ["ip", "netns", "exec", link.host, sys.executable, "-c", LAUNCHER,
             "discover", "--dns", "127.0.0.1:9", "--json"],
            capture_output=True, text=True, timeout=30, cwd=REPO, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["chosen"] == {"prefix": PREFIX_A, "why": "PREF64 from RA on ra0"}
    ra = result["sources"][0]
    assert (ra["source"], ra["prefixes"]) == ("PREF64 (RA)", [PREFIX_A])
    assert ra["detail"].startswith(f"on ra0 from {ROUTER_LL}, lifetime ")
    assert result["sources"][2]["detail"] == "no answer from DNS 127.0.0.1:9"
