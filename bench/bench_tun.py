#!/usr/bin/env python3
"""Bulk TCP through proxy64's TUN mode vs direct loopback (needs root).

    .venv/bin/python bench/bench_tun.py [--quick] [--size MB] [--rounds N] [--mtu M ...]

For each MTU, runs a client INSIDE `proxy64 tun run` (its only network is the TUN) that
downloads and then uploads --size MB from/to an origin on 127.0.0.1 in the root
namespace (reached as 2001:db8:64::7f00:1, embedded egress), the same client directly on
loopback, and (when installed) inside a namespace served by slirp4netns at the same MTU
(the origin reached as 10.0.2.2, slirp4netns's host-loopback address), and (when
installed) from an IPv6-only namespace through tayga (a kernel-TUN NAT64 in C) in a gateway
namespace where an origin listens on IPv4 only, veths and tayga's TUN at the same MTU
(namespaces p64-tunperf-<pid>-c/-g, deleted after each round). Reports MB/s
(median of --rounds, plus min/max) and the CPU time of the client plus proxy64 (or
slirp4netns, tayga) per GiB moved, start-up included. Prints one JSON object on stdout
(the last line); progress goes to stderr. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "2001:db8:64::/96"
SYNTH = "2001:db8:64::7f00:1"
CHUNK = 1 << 20

CLIENT = r"""
import json, socket, sys, time
host, port, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.create_connection((host, port), timeout=120)
s.sendall(mode.encode() + b" %d\n" % size)
start = time.perf_counter()
if mode == "down":
    left = size
    while left > 0:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("short download")
        left -= len(chunk)
else:
    block = b"u" * (1 << 20)
    left = size
    while left > 0:
        n = min(left, len(block))
        s.sendall(block[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    if s.recv(16) != b"ok":
        raise SystemExit("upload not confirmed")
elapsed = time.perf_counter() - start
print(json.dumps({"mode": mode, "seconds": elapsed, "mb_s": size / elapsed / 1e6}))
"""


def log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Origin:
    """A threaded loopback origin: 'down N' sends N bytes, 'up N' reads N and says ok."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            head = b""
            while not head.endswith(b"\n"):
                byte = conn.recv(1)
                if not byte:
                    return
                head += byte
            mode, size_text = head.decode().split()
            size = int(size_text)
            if mode == "down":
                block = b"d" * CHUNK
                left = size
                while left > 0:
                    n = min(left, CHUNK)
                    conn.sendall(block[:n])
                    left -= n
            else:
                left = size
                while left > 0:
                    data = conn.recv(CHUNK)
                    if not data:
                        return
                    left -= len(data)
                conn.sendall(b"ok")

    def close(self) -> None:
        self.sock.close()


def run_client(argv_prefix: list[str], host: str, port: int, size: int) -> dict[str, Any]:
    """Run the client for both directions under argv_prefix; returns figures and CPU."""
    script = (
        f"{sys.executable} -c '{CLIENT}' {host} {port} {size} down && "
        f"{sys.executable} -c '{CLIENT}' {host} {port} {size} up"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [*argv_prefix, "sh", "-c", script], capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"client failed ({done.returncode}): {done.stderr[-2000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {r["mode"]: r["mb_s"] for r in results} | {"cpu_s": cpu}


def run_client_slirp(port: int, size: int, mtu: int) -> dict[str, Any]:
    """The same client in a namespace served by slirp4netns (host loopback as 10.0.2.2)."""
    script = (
        # "ready": the namespace exists (slirp4netns must not start before the unshare,
        # or it attaches to the namespace the child had then); slirp4netns configures
        # tap0 once it has started: up to 30 s on a loaded machine
        "echo ready; "
        "for i in $(seq 600); do ip -4 route show default 2>/dev/null | grep -q tap0 && break; "
        "sleep 0.05; done; "
        f"{sys.executable} -c '{CLIENT}' 10.0.2.2 {port} {size} down && "
        f"{sys.executable} -c '{CLIENT}' 10.0.2.2 {port} {size} up"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", script], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        child.wait()
        raise RuntimeError("the slirp4netns client's namespace was not created")
    slirp = subprocess.Popen(
        ["slirp4netns", "--configure", f"--mtu={min(mtu, 65521)}", str(child.pid), "tap0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, _ = child.communicate(timeout=600)
    finally:
        slirp.terminate()
        slirp.wait(timeout=10)
        if child.poll() is None:
            child.kill()
            child.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise RuntimeError(f"slirp4netns client failed ({child.returncode})")
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {r["mode"]: r["mb_s"] for r in results} | {"cpu_s": cpu}


TAYGA_CONF = """tun-device nat64
ipv4-addr 192.168.255.1
prefix 2001:db8:64::/96
dynamic-pool 192.168.255.0/24
data-dir {data_dir}
"""
TAYGA_ORIGIN4 = "192.0.2.1"  # the origin's IPv4 address in the gateway namespace
TAYGA_ORIGIN6 = "2001:db8:64::c000:201"  # the same, embedded in the prefix (RFC 6052)


def run_client_tayga(size: int, mtu: int) -> dict[str, Any]:
    """The same client in an IPv6-only namespace routed through tayga (C, a kernel TUN
    NAT64) in a gateway namespace, where the origin listens on IPv4 only. Veth and tayga's
    TUN get the MTU; CPU counts the client and tayga, not the origin (as for the others)."""
    tag = f"p64-tunperf-{os.getpid()}"
    client_ns, gateway_ns = f"{tag}-c", f"{tag}-g"
    data_dir = Path(f"/tmp/{tag}-tayga")
    processes: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def in_ns(ns: str, *argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True,
                       timeout=30)  # fmt: skip

    try:
        ip("netns", "add", client_ns)
        ip("netns", "add", gateway_ns)
        ip("link", "add", "p64c0", "mtu", str(mtu), "netns", client_ns, "type", "veth",
           "peer", "p64g0", "mtu", str(mtu), "netns", gateway_ns)  # fmt: skip
        for ns, dev, addr in (
            (client_ns, "p64c0", "fd65::2/64"),
            (gateway_ns, "p64g0", "fd65::1/64"),
        ):
            in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "addr", "add", addr, "dev", dev, "nodad")
        ip("-n", client_ns, "-6", "route", "add", "default", "via", "fd65::1")
        in_ns(
            gateway_ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1"
        )
        ip("-n", gateway_ns, "addr", "add", f"{TAYGA_ORIGIN4}/32", "dev", "lo")
        data_dir.mkdir(exist_ok=True)
        conf = data_dir / "tayga.conf"
        conf.write_text(TAYGA_CONF.format(data_dir=data_dir))
        in_ns(gateway_ns, "tayga", "-c", str(conf), "--mktun")
        ip("-n", gateway_ns, "link", "set", "nat64", "mtu", str(mtu), "up")
        ip("-n", gateway_ns, "route", "add", "2001:db8:64::/96", "dev", "nat64")
        ip("-n", gateway_ns, "route", "add", "192.168.255.0/24", "dev", "nat64")
        origin = subprocess.Popen(
            ["ip", "netns", "exec", gateway_ns, sys.executable, __file__, "--origin",
             TAYGA_ORIGIN4],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        processes.append(origin)
        assert origin.stdout is not None
        port = int(origin.stdout.readline())
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        tayga = subprocess.Popen(
            ["ip", "netns", "exec", gateway_ns, "tayga", "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(tayga)
        result = run_client(["ip", "netns", "exec", client_ns], TAYGA_ORIGIN6, port, size)
        tayga.terminate()
        tayga.wait(timeout=10)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["cpu_s"] += (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return result
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for ns in (client_ns, gateway_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


def serve_origin(host: str) -> int:
    """--origin HOST: serve an Origin on HOST, print its port, stop when stdin closes."""
    origin = Origin(host)
    print(origin.port, flush=True)
    sys.stdin.read()
    origin.close()
    return 0


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small size, one round (smoke)")
    parser.add_argument("--size", type=int, default=None, help="MB each way (default 256)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--mtu", type=int, action="append", help="TUN MTUs (65520, 1500)")
    parser.add_argument(
        "--no-slirp", action="store_true", help="skip slirp4netns (run when installed)"
    )
    parser.add_argument("--no-tayga", action="store_true", help="skip tayga (run when installed)")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run `tun run` from another proxy64 tree (DIR holds its proxy64/ package; "
        "e.g. `git archive HEAD~1 proxy64 | tar -x -C DIR`) as tun-base-mtuM, interleaved: "
        "an A/B of two versions in one run (start the bench outside this tree)",
    )
    parser.add_argument("--origin", help=argparse.SUPPRESS)  # internal: the tayga case's origin
    args = parser.parse_args()
    if args.origin:
        return serve_origin(args.origin)
    if os.geteuid() != 0:
        print(json.dumps({"benchmark": "tun", "skipped": "needs root (network namespaces)"}))
        return 0
    size = (args.size or (16 if args.quick else 256)) * 1_000_000
    rounds = args.rounds or (1 if args.quick else 3)
    mtus = args.mtu or ([65520] if args.quick else [65520, 1500])
    slirp = not args.no_slirp and shutil.which("slirp4netns") is not None
    tayga = not args.no_tayga and shutil.which("tayga") is not None
    origin = Origin()
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        for round_no in range(rounds):
            cases: list[tuple[str, list[str], str]] = [("direct", [], "127.0.0.1")]
            for mtu in mtus:
                proxy = [
                    sys.executable, "-m", "proxy64", "tun", "run", "--nat64-prefix", PREFIX,
                    "--egress", "embedded", "--mtu", str(mtu), "--dns", "127.0.0.1:9",
                    "--log-level", "warning", "--",
                ]  # fmt: skip
                cases.append((f"tun-mtu{mtu}", proxy, SYNTH))
                if args.baseline:
                    base = ["env", f"PYTHONPATH={Path(args.baseline).resolve()}", *proxy]
                    cases.append((f"tun-base-mtu{mtu}", base, SYNTH))
            if slirp:
                cases += [(f"slirp4netns-mtu{mtu}", [], "") for mtu in mtus]
            if tayga:
                cases += [(f"tayga-mtu{mtu}", [], "") for mtu in mtus]
            for name, prefix, host in cases:  # interleaved: one of each per round
                log(f"round {round_no + 1}/{rounds}: {name}")
                if name.startswith("tayga"):
                    try:
                        result = run_client_tayga(size, int(name.split("mtu")[1]))
                    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                        log(f"{name}: {exc}; skipped this round")
                        continue
                elif name.startswith("slirp4netns"):
                    try:
                        result = run_client_slirp(origin.port, size, int(name.split("mtu")[1]))
                    except RuntimeError as exc:  # a peer's failure must not lose our figures
                        log(f"{name}: {exc}; skipped this round")
                        continue
                else:
                    result = run_client(prefix, host, origin.port, size)
                entry = figures.setdefault(name, {"down": [], "up": [], "cpu_s_per_gib": []})
                entry["down"].append(result["down"])
                entry["up"].append(result["up"])
                entry["cpu_s_per_gib"].append(result["cpu_s"] / (2 * size / (1 << 30)))
    finally:
        origin.close()
    out: dict[str, Any] = {
        "benchmark": "tun",
        "size_mb_each_way": size // 1_000_000,
        "rounds": rounds,
        "unit": "MB/s (median, min, max); cpu_s_per_gib: client + proxy64/slirp4netns/tayga",
        "results": {
            name: {key: summarize(values) for key, values in entry.items()}
            for name, entry in figures.items()
        },
        "machine": {"cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime())},
    }  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
