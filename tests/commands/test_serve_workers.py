"""`serve --workers N` supervision, end to end with real processes: a killed worker is
replaced and connections keep succeeding, a crash loop backs off, SIGTERM/SIGINT stop every
worker (none left behind), a killed supervisor takes its workers with it, and the NAT64
choice (RFC 7050 discovery) is made once for all workers, restarted ones included."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from tests.helpers import socks5_client
from tests.helpers.aiohttp_origin import Origin
from tests.helpers.curl import curl, echo
from tests.helpers.proxy_process import (
    EMBEDDED,
    STARTUP_RE,
    ProxyProcess,
    children,
    proxy64_command,
    proxy_process,
)
from tests.helpers.requirements import require_tool, tool_path

RESTART_RE = re.compile(
    r"worker (\d+) \(pid (\d+)\) (.*) after [\d.]+ s; restarting it in ([\d.]+) s"
)


def orphan_workers() -> set[int]:
    """`proxy64 serve --workers` processes whose parent is init: workers left behind."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if fields[1] == "1" and fields[0] != "Z" and b"--workers" in argv and b"serve" in argv:
            found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    """Every test here must leave no worker behind (stopped by PID if one is)."""
    before = orphan_workers()
    yield
    deadline = time.monotonic() + 10
    while (left := orphan_workers() - before) and time.monotonic() < deadline:
        time.sleep(0.1)  # a worker told to stop may still be finishing
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers left behind: {sorted(left)}"


def listeners_of(port: int) -> str:
    """`ss` lines of the TCP sockets listening on this port, with their processes."""
    require_tool("ss")
    return subprocess.run(
        [tool_path("ss"), "-Hltnp", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    ).stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): count it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def restarts(proxy: ProxyProcess) -> list[tuple[int, int, str, float]]:
    return [(int(m[1]), int(m[2]), m[3], float(m[4])) for m in RESTART_RE.finditer(proxy.output())]


def test_killed_worker_is_replaced_and_connections_keep_succeeding(origin: Origin) -> None:
    with proxy_process(*EMBEDDED, "--workers", "2") as proxy:
        first = children(proxy.pid)
        assert len(first) == 2  # the supervisor accepts nothing itself: 2 workers
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # connections made while the worker is dead and while it restarts all succeed:
        # its listening socket left the SO_REUSEPORT group when it died
        for _ in range(8):
            assert echo(curl("-x", proxy.socks_url, origin.url4("/echo")))["path_qs"] == "/echo"
        wait_for(lambda: len(children(proxy.pid) - first) == 1, 5.0, "a new worker")
        now = children(proxy.pid)
        assert len(now) == 2 and victim not in now
        new = (now - first).pop()
        # the new worker listens on both ports (its own SO_REUSEPORT sockets) and serves
        assert proxy.socks is not None and proxy.http is not None
        for port in (proxy.socks[1], proxy.http[1]):
            assert f"pid={new}," in listeners_of(port)
        for _ in range(8):
            assert echo(curl("-x", proxy.http_url, origin.url4("/echo")))["path_qs"] == "/echo"
        assert alive(new)
        seen = restarts(proxy)
        assert len(seen) == 1
        assert seen[0][1] == victim and seen[0][2] == "was killed by SIGKILL"
        assert seen[0][3] == pytest.approx(0.1)
        assert proxy.stop() == 0
    assert not any(alive(pid) for pid in now | first)


def test_crash_loop_backs_off(origin: Origin) -> None:
    """Kill one slot's worker as soon as it appears, for 3 s: the delays double
    (0.1, 0.2, 0.4, 0.8, 1.6 s), so at most 5 restarts fit in the window, not hundreds."""
    window = 3.0
    with proxy_process(*EMBEDDED, "--workers", "2") as proxy:
        survivor, victim = sorted(children(proxy.pid))
        killed = {victim}
        deadline = time.monotonic() + window
        os.kill(victim, signal.SIGKILL)
        while time.monotonic() < deadline:
            for pid in children(proxy.pid) - {survivor} - killed:
                os.kill(pid, signal.SIGKILL)  # each new worker once (a dying one stays listed)
                killed.add(pid)
            time.sleep(0.01)
        time.sleep(0.3)
        seen = restarts(proxy)
        delays = [d for _, _, _, d in seen]
        assert 3 <= len(seen) <= 5, seen
        assert delays == [0.1, 0.2, 0.4, 0.8, 1.6][: len(delays)]
        assert len({slot for slot, _, _, _ in seen}) == 1  # one slot, the survivor's untouched
        # the survivor served throughout
        assert alive(survivor)
        assert echo(curl("-x", proxy.socks_url, origin.url4("/echo")))["path_qs"] == "/echo"
        assert proxy.stop() == 0
    assert len(killed) == len(seen)  # every death was noticed and logged once
    assert {pid for _, pid, _, _ in seen} == killed
    assert not alive(survivor)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_every_worker(origin: Origin, sig: int) -> None:
    with proxy_process(*EMBEDDED, "--workers", "3") as proxy:
        workers = children(proxy.pid)
        assert len(workers) == 3
        echo(curl("-x", proxy.http_url, origin.url4("/echo")))
        assert proxy.stop(sig) == 0
        assert "Traceback" not in proxy.output()
    assert not any(alive(pid) for pid in workers)


def test_stop_after_a_restart_leaves_no_worker(origin: Origin) -> None:
    with proxy_process(*EMBEDDED, "--workers", "2") as proxy:
        first = children(proxy.pid)
        os.kill(min(first), signal.SIGKILL)
        wait_for(lambda: len(children(proxy.pid) - first) == 1, 5.0, "a new worker")
        everyone = first | children(proxy.pid)
        assert proxy.stop(signal.SIGTERM) == 0
    assert not any(alive(pid) for pid in everyone)


def test_a_killed_supervisor_takes_its_workers_with_it() -> None:
    with proxy_process(*EMBEDDED, "--workers", "2") as proxy:
        workers = children(proxy.pid)
        assert len(workers) == 2
        proxy.stop(signal.SIGKILL)  # no chance to pass anything on: PR_SET_PDEATHSIG does
        wait_for(lambda: not any(alive(pid) for pid in workers), 10.0, "workers gone")


class CountingDns:
    """A UDP DNS server in a thread that answers ipv4only.arpa AAAA like a DNS64 with the
    well-known prefix (RFC 7050 §3) and counts the queries it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.prefix = "64:ff9b::"  # what ipv4only.arpa is synthesized with
        self.ttl = 60
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            self.queries += 1
            response = dns.message.make_response(query)
            question = query.question[0]
            if question.rdtype == dns.rdatatype.AAAA:
                response.answer.append(
                    dns.rrset.from_text(
                        question.name,
                        self.ttl,
                        "IN",
                        "AAAA",
                        f"{self.prefix}c000:aa",
                        f"{self.prefix}c000:ab",
                    )
                )
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_workers_share_one_nat64_discovery() -> None:
    server = CountingDns()
    try:
        with proxy_process(
            "--egress", "auto", "--dns", f"127.0.0.1:{server.port}", "--workers", "2"
        ) as proxy:
            assert proxy.why.startswith("RFC 7050 via 127.0.0.1:")
            assert proxy.prefix == "64:ff9b::/96" and proxy.egress == "nat64"
            asked = server.queries
            assert asked >= 1
            first = children(proxy.pid)
            os.kill(min(first), signal.SIGKILL)
            wait_for(lambda: len(children(proxy.pid) - first) == 1, 5.0, "a new worker")
            time.sleep(0.5)
            assert server.queries == asked  # the new worker did not probe again
            lines = [ln for ln in proxy.output().splitlines() if ln.startswith("proxy64:")]
            assert lines == [proxy.startup_line]  # one start-up line, once
    finally:
        server.close()


def test_every_worker_follows_a_prefix_change_on_its_own() -> None:
    """Each worker runs its own watcher (RFC 7050 §3: asks again when the TTL runs out)."""
    server = CountingDns()
    server.ttl = 2
    try:
        with proxy_process(
            "--egress", "auto", "--dns", f"127.0.0.1:{server.port}", "--workers", "2"
        ) as proxy:
            assert proxy.prefix == "64:ff9b::/96"
            server.prefix = "2001:db8:64::"
            change = "NAT64 prefix changed: 64:ff9b::/96 (egress nat64) -> 2001:db8:64::/96"
            wait_for(lambda: proxy.output().count(change) == 2, 15.0, "both workers follow")
            assert len(children(proxy.pid)) == 2  # followed, not restarted
    finally:
        server.close()


def test_sigterm_right_after_the_startup_line_stops_every_worker() -> None:
    """Workers may not have started trio yet: the signal waits (blocked) until they have."""
    for _ in range(2):
        with proxy_process(*EMBEDDED, "--workers", "2") as proxy:
            workers = children(proxy.pid)
            assert proxy.stop(signal.SIGTERM) == 0, proxy.output()
        assert not any(alive(pid) for pid in workers)


def tunnel_owners(port: int) -> set[int]:
    """PIDs of the processes holding an established TCP connection on this local port."""
    require_tool("ss")
    lines = subprocess.run(
        [tool_path("ss"), "-Htnp", "state", "established", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+),", lines)}


def test_ctrl_c_to_the_whole_process_group_stops_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C sends SIGINT to the supervisor and every worker at once; the
    supervisor passes it on as well, so each worker gets SIGINT twice. The order that
    matters is made certain here: each worker has taken the terminal's copy (its
    listener is closed) and is still draining an open tunnel (shutdown_grace) when the
    supervisor's copy arrives. Every worker still stops cleanly, exit status 0."""
    config = tmp_path / "p.toml"
    config.write_text("shutdown_grace = 30\n")
    argv = [*proxy64_command(), *EMBEDDED, "--socks", "127.0.0.1:0", "--http", "off"]
    origin = socket.create_server(("127.0.0.1", 0), backlog=64)  # never accepts: no reply
    tunnels: list[socket.socket] = []
    log = subprocess.Popen(
        [*argv, "--workers", "2", "--config", str(config)],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    try:
        assert log.stderr is not None
        line = log.stderr.readline()
        match = STARTUP_RE.match(line)
        assert match, line
        socks_port = int(match["socks"].rpartition(":")[2])
        workers = children(log.pid)
        assert len(workers) == 2
        # SO_REUSEPORT spreads connections by their ports: open tunnels until each worker
        # holds one (the chance that 32 all land on one worker is 2**-31)
        for _ in range(32):
            tunnel = socket.create_connection(("127.0.0.1", socks_port), timeout=10)
            tunnels.append(tunnel)
            socks5_client.connect(tunnel, "127.0.0.1", origin.getsockname()[1])
            if tunnel_owners(socks_port) >= workers:
                break
        assert tunnel_owners(socks_port) >= workers, "a worker without a tunnel"
        for pid in workers:  # the terminal's copy reaches the workers first...
            os.kill(pid, signal.SIGINT)
        wait_for(lambda: not listeners_of(socks_port), 10.0, "every worker closed its listener")
        os.kill(log.pid, signal.SIGINT)  # ...then the supervisor's, which passes it on
        time.sleep(0.5)
        assert all(alive(pid) for pid in workers), "a worker did not wait for its tunnels"
        origin.close()  # resets every tunnel's origin side: the drain ends
        for tunnel in tunnels:
            tunnel.close()
        _, errors = log.communicate(timeout=20)
        assert log.returncode == 0, errors
        assert "Traceback" not in errors
        assert not any(alive(pid) for pid in workers)
    finally:
        origin.close()
        for tunnel in tunnels:
            tunnel.close()
        if log.poll() is None:
            os.killpg(log.pid, signal.SIGKILL)
            log.wait(10)


def test_only_workers_listen_and_the_supervisor_keeps_the_ports() -> None:
    """The supervisor holds bound, non-listening sockets (no connection is queued where
    nobody accepts); each worker has its own listening socket on each port."""
    with proxy_process(*EMBEDDED, "--workers", "3") as proxy:
        workers = children(proxy.pid)
        assert proxy.socks is not None and proxy.http is not None
        for port in (proxy.socks[1], proxy.http[1]):
            lines = listeners_of(port).splitlines()
            owners = {int(m) for line in lines for m in re.findall(r"pid=(\d+),", line)}
            assert len(lines) == 3 and owners == workers, lines
            # the port stays ours: another program cannot listen on it
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))


def test_a_hung_worker_is_killed_and_replaced(tmp_path: Path, origin: Origin) -> None:
    """A stopped worker (SIGSTOP: its trio loop cannot run, like a loop stuck in a bug)
    sends no heartbeat; after worker_timeout the supervisor kills it by PID and a new
    worker takes its place, so its share of new connections is served again."""
    config = tmp_path / "p.toml"
    config.write_text("worker_timeout = 2\n")  # beats every 0.5 s (heartbeat_interval)
    with proxy_process(*EMBEDDED, "--workers", "2", "--config", str(config)) as proxy:
        first = children(proxy.pid)
        hung = min(first)
        os.kill(hung, signal.SIGSTOP)
        # killed about 2 s after its last beat, forked again 0.1 s later; the bound is for
        # a loaded machine
        wait_for(lambda: len(restarts(proxy)) >= 1, 15.0, "the restart line")
        wait_for(lambda: len(children(proxy.pid) - first) >= 1, 5.0, "a new worker")
        assert not alive(hung)
        assert len(children(proxy.pid)) == 2
        silent = re.findall(r"worker \d \(pid (\d+)\) has not answered for \d+ s", proxy.output())
        assert silent == [str(hung)]
        seen = restarts(proxy)
        assert len(seen) == 1 and seen[0][1] == hung and seen[0][2] == "was killed by SIGKILL"
        for _ in range(8):
            assert echo(curl("-x", proxy.socks_url, origin.url4("/echo")))["path_qs"] == "/echo"
        time.sleep(2.5)  # over worker_timeout: the healthy worker keeps beating, is not killed
        assert len(restarts(proxy)) == 1
        assert proxy.stop() == 0


STUCK_WORKER = """
import signal, trio
from proxy64.serving import serve_until_signal
from proxy64.workers import exit_alarm

class Stuck:  # a server whose shutdown never ends (what a bug could do)
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        with trio.CancelScope(shield=True):
            await trio.sleep(3600)

    def stop(self):
        pass

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
print("READY", flush=True)
trio.run(serve_until_signal, Stuck(), exit_alarm(1.0))
"""


def test_a_worker_whose_shutdown_hangs_is_gone_soon_after_the_stop_signal() -> None:
    """Nobody may be left to SIGKILL a worker (its supervisor was SIGKILLed, the kernel
    sent it SIGTERM): exit_alarm ends it anyway, by SIGALRM, `seconds` after the signal."""
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_WORKER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        took = time.monotonic() - started
        assert proc.returncode == -signal.SIGALRM
        assert 0.9 <= took < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
