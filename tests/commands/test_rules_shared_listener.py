"""The built-in rules of a shared proxy, end to end: proxy64 listens with authentication on
fd00::1, a non-loopback address on a veth of a network namespace this test creates (both
ends inside it), and curl (in the same namespace) asks it for this host's loopback, its
own address and the cloud metadata address 169.254.169.254: SOCKS5 reply 2 (curl exit
97) and HTTP 403, the log naming the built-in rule. An allow rule for one port, or
--allow-host-access, opens the origin again (so the refusal was the rule, not the
network). No packet leaves the namespace: it has no link but lo and its own veth pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.helpers.proxy_process import ProxyProcess, proxy_process
from tests.helpers.requirements import require_root, require_tool, tool_path

pytestmark = pytest.mark.network

ADDRESS = "fd00::1"
ORIGIN_PORT = 18080  # a fresh namespace: every port is free
EMBEDDED = ("--egress", "embedded", "--nat64-prefix", "2001:db8:64::/96")
USERS = "alice:Secret-Pw\n"


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A namespace with lo up, fd00::1/64 on a veth, and an HTTP origin on 127.0.0.1."""
    require_root()
    require_tool("ip", "curl")
    name = f"p64r-{os.getpid()}"
    ip = tool_path("ip")
    subprocess.run([ip, "netns", "add", name], check=True)
    origin: subprocess.Popen[bytes] | None = None
    try:
        for args in (
            ["link", "set", "lo", "up"],
            # both ends of the veth pair stay in the namespace (this kernel has no dummy)
            ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["addr", "add", f"{ADDRESS}/64", "dev", "v0", "nodad"],
            ["link", "set", "v0", "up"],
            ["link", "set", "v1", "up"],
        ):
            subprocess.run([ip, "-n", name, *args], check=True)
        origin = subprocess.Popen(
            [ip, "netns", "exec", name, sys.executable, "-m", "http.server",
             "--bind", "127.0.0.1", str(ORIGIN_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while in_netns(name, "-o", "/dev/null", f"http://127.0.0.1:{ORIGIN_PORT}/").returncode:
            assert time.monotonic() < deadline, "the origin in the namespace did not start"
            time.sleep(0.1)
        yield name
    finally:
        if origin is not None:
            origin.kill()
            origin.wait(10)
        subprocess.run([ip, "netns", "delete", name], check=False)


def in_netns(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool_path("ip"), "netns", "exec", netns, tool_path("curl"), "-sS", "--max-time", "10",
         "--noproxy", "", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )  # fmt: skip


def shared_proxy(netns: str, users: Path, *extra: str) -> AbstractContextManager[ProxyProcess]:
    return proxy_process(
        *EMBEDDED,
        "--socks", f"[{ADDRESS}]:0",
        "--http", f"[{ADDRESS}]:0",
        "--auth-file", str(users),
        "--log-level", "info",
        *extra,
        wrapper=(tool_path("ip"), "netns", "exec", netns),
    )  # fmt: skip


def via_socks(netns: str, proxy: ProxyProcess, url: str) -> subprocess.CompletedProcess[str]:
    assert proxy.socks is not None
    socks = f"socks5h://alice:Secret-Pw@[{ADDRESS}]:{proxy.socks[1]}"
    return in_netns(netns, "-o", "/dev/null", "-x", socks, url)


def via_http(netns: str, proxy: ProxyProcess, *url: str) -> subprocess.CompletedProcess[str]:
    assert proxy.http is not None
    http = f"http://alice:Secret-Pw@[{ADDRESS}]:{proxy.http[1]}"
    return in_netns(netns, "-w", "%{http_code}", "-x", http, *url)


LOOPBACK = f"http://127.0.0.1:{ORIGIN_PORT}/"
OWN = f"http://[{ADDRESS}]:{ORIGIN_PORT}/"
METADATA = "http://169.254.169.254/latest/meta-data/"


def test_defaults_refuse_this_host_and_metadata(netns: str, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS)
    with shared_proxy(netns, users) as proxy:
        assert proxy.socks is not None and proxy.socks[0] == ADDRESS
        for url in (LOOPBACK, OWN, METADATA):
            result = via_socks(netns, proxy, url)
            assert result.returncode == 97 and "(2)" in result.stderr, (url, result.stderr)
            answer = via_http(netns, proxy, url)
            assert answer.stdout.endswith("403"), (url, answer.stdout, answer.stderr)
            assert "access rules" in answer.stdout and "built-in" not in answer.stdout
        time.sleep(0.2)
        out = proxy.output()
        assert "denied by rule 1 (deny dest this-host, built-in)" in out
        assert "denied by rule 2 (deny dest link-local, built-in)" in out
        assert "--allow-host-access" in out


def test_an_allow_rule_opens_one_port_of_this_host(netns: str, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS)
    opened = ("--allow", f"127.0.0.1 ports={ORIGIN_PORT}")
    with shared_proxy(netns, users, *opened) as proxy:
        assert via_socks(netns, proxy, LOOPBACK).returncode == 0
        assert via_http(netns, proxy, LOOPBACK).stdout.endswith("200")
        own = via_socks(netns, proxy, OWN)  # the allow rule names 127.0.0.1 only
        assert own.returncode == 97 and "(2)" in own.stderr
        metadata = via_socks(netns, proxy, METADATA)
        assert metadata.returncode == 97 and "(2)" in metadata.stderr
    with shared_proxy(netns, users, "--allow-host-access") as proxy:
        assert via_socks(netns, proxy, LOOPBACK).returncode == 0
        own = via_socks(netns, proxy, OWN)  # no rule in the way: the origin is on 127.0.0.1
        assert own.returncode == 97 and "(5)" in own.stderr, own.stderr  # connection refused


@pytest.fixture(scope="module")
def ipv6_loopback_origin(netns: str) -> Iterator[str]:
    """An HTTP origin on [::1] in the namespace, and a hosts(5) name for it (ip netns exec
    bind-mounts /etc/netns/NAME/hosts over /etc/hosts for what it runs, proxy64 included)."""
    hosts_dir = Path("/etc/netns") / netns
    hosts_dir.mkdir(parents=True, exist_ok=True)
    (hosts_dir / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n::1 loopy.test\n")
    origin = subprocess.Popen(
        [tool_path("ip"), "netns", "exec", netns, sys.executable, "-m", "http.server",
         "--bind", "::1", str(ORIGIN_PORT + 1)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://[::1]:{ORIGIN_PORT + 1}/"
        deadline = time.monotonic() + 10
        while in_netns(netns, "-o", "/dev/null", url).returncode:
            assert time.monotonic() < deadline, "the [::1] origin in the namespace did not start"
            time.sleep(0.1)
        yield url
    finally:
        origin.kill()
        origin.wait(10)
        (hosts_dir / "hosts").unlink(missing_ok=True)
        hosts_dir.rmdir()


@pytest.mark.parametrize("prefix", ["64:ff9b::/96", "2001:db8:64::/96"])
def test_every_route_to_ipv6_loopback_is_refused(
    netns: str, ipv6_loopback_origin: str, tmp_path: Path, prefix: str
) -> None:
    """[::1] by literal, by a name that resolves to it (hosts file), localhost (RFC 6761
    §6.3) and 127.0.0.1 embedded in the prefix: refused through SOCKS5, HTTP forwarding
    and CONNECT alike, under the well-known and a network-specific prefix."""
    users = tmp_path / "users"
    users.write_text(USERS)
    port = ORIGIN_PORT + 1
    embedded_loopback = "[64:ff9b::7f00:1]" if prefix.startswith("64:") else "[2001:db8:64::7f00:1]"
    urls = [
        ipv6_loopback_origin,
        f"http://loopy.test:{port}/",
        f"http://localhost:{port}/",
        f"http://{embedded_loopback}:{ORIGIN_PORT}/",
    ]
    with proxy_process(
        "--egress", "embedded", "--nat64-prefix", prefix,
        "--socks", f"[{ADDRESS}]:0", "--http", f"[{ADDRESS}]:0",
        "--auth-file", str(users), "--log-level", "info",
        wrapper=(tool_path("ip"), "netns", "exec", netns),
    ) as proxy:  # fmt: skip
        for url in urls:
            result = via_socks(netns, proxy, url)
            assert result.returncode == 97 and "(2)" in result.stderr, (url, result.stderr)
            forwarded = via_http(netns, proxy, url)
            assert forwarded.stdout.endswith("403"), (url, forwarded.stdout, forwarded.stderr)
            tunnel = via_http(netns, proxy, "-p", url)
            assert tunnel.returncode == 56 and "403" in tunnel.stderr, (url, tunnel.stderr)
    with proxy_process(
        "--egress", "embedded", "--nat64-prefix", prefix,
        "--socks", f"[{ADDRESS}]:0", "--http", f"[{ADDRESS}]:0",
        "--auth-file", str(users), "--allow-host-access",
        wrapper=(tool_path("ip"), "netns", "exec", netns),
    ) as proxy:  # fmt: skip
        # the route exists: what refused it above was the built-in rule
        assert via_socks(netns, proxy, ipv6_loopback_origin).returncode == 0
        assert via_http(netns, proxy, f"http://loopy.test:{port}/").stdout.endswith("200")
