"""`proxy64 tun serve --device NAME` serving a TUN device someone else configures.

Everything happens inside a network namespace this test creates (unique name, deleted
in teardown): proxy64 creates the device there, the test configures it like an
administrator would, and curl inside the namespace reaches an origin on the namespace's
own 127.0.0.1 through the synthesized address (embedded egress).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers.requirements import require_root, require_tool

pytestmark = pytest.mark.network
_counter = itertools.count(1)

SCRIPT = """
set -u
ip link set lo up
{py} -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 & ORIGIN=$!
{start} --nat64-prefix 2001:db8:64::/96 \\
    --egress embedded --dns 127.0.0.1:9 --log-level warning 2>serve.err & SERVE=$!
for i in $(seq 100); do ip link show p64t0 >/dev/null 2>&1 && break; sleep 0.05; done
ip link set p64t0 up
ip -6 addr add fd64::2/64 dev p64t0 nodad
ip -6 route add 2001:db8:64::/96 via fd64::1 dev p64t0
for i in $(seq 100); do
  {py} -c "import socket; socket.create_connection(('127.0.0.1', 18080))" 2>/dev/null && break
  sleep 0.05
done
curl -sS -m 10 -o /dev/null -w "code=%{{http_code}}\\n" "http://[2001:db8:64::7f00:1]:18080/"
head -c 3000000 /dev/urandom > blob
{py} -m http.server 18081 --bind 127.0.0.1 >/dev/null 2>&1 & ORIGIN2=$!
sleep 0.5
curl -sS -m 20 -o got "http://[2001:db8:64::7f00:1]:18081/blob" && cmp blob got && echo same
kill $ORIGIN2
kill -INT $SERVE; wait $SERVE; echo "serve=$?"
kill $ORIGIN; wait $ORIGIN 2>/dev/null
cat serve.err
"""


@pytest.fixture
def netns(tmp_path: object) -> Iterator[str]:
    require_root()
    require_tool("ip", "curl")
    name = f"p64-tun-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              check=False).stdout.split()  # fmt: skip
        for pid in pids:  # only processes inside our own namespace
            subprocess.run(["kill", "-KILL", pid], check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)


# `tun serve --fd`: a tiny launcher attaches p64t0 WITHOUT the virtio header (the plain
# path: every checksum computed and verified by proxy64) and execs proxy64 with the fd.
FD_LAUNCHER = (
    "{py} -c 'import os, sys\n"
    "from proxy64.tun.device import open_tun\n"
    'fd, _ = open_tun("p64t0", vnet=False)\n'
    "os.set_inheritable(fd, True)\n"
    'os.execv(sys.executable, [sys.executable, "-m", "proxy64", "tun", "serve", '
    '"--fd", str(fd)] + sys.argv[1:])\' '
)

STARTS = {
    "device": "{py} -m proxy64 tun serve --device p64t0",
    "fd-without-vnet": FD_LAUNCHER,
}


@pytest.mark.parametrize("start", sorted(STARTS))
def test_serve_device_in_a_namespace(netns: str, tmp_path: object, start: str) -> None:
    script = SCRIPT.format(py=sys.executable, start=STARTS[start].format(py=sys.executable))
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=False,
    )
    assert "code=200" in done.stdout, done.stdout + done.stderr
    assert "same" in done.stdout  # 3 MB intact through the TUN
    assert "serve=0" in done.stdout  # SIGINT: clean stop, exit 0
    assert "proxy64 readiness report" in done.stdout  # printed at exit (stderr → file)
    assert "[2001:db8:64::7f00:1]:18080" in done.stdout


def test_serve_bad_fd_is_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy64", "tun", "serve", "--fd", "987"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--fd 987" in done.stderr
