"""Memory soak (not CI): does proxy64 serve's RSS reach a plateau under repeated load?

Starts bench/origins.py and `proxy64 serve` on loopback, then runs ROUNDS identical rounds
of CONNS connections (SOCKS5 by default: greeting, CONNECT to the origin at [::1], GET /1,
full response, close; 64 in flight) and prints the proxy's VmRSS after each round.
Every round is bounded (--round-limit seconds); every address is loopback.

    .venv/bin/python bench/soak_memory.py                    # 25 rounds of 5,000
    .venv/bin/python bench/soak_memory.py --kind connect --rounds 10
    .venv/bin/python bench/soak_memory.py --tracemalloc 8    # find what grows (slow)

--tracemalloc N runs the server in this process (the load in a thread) with tracemalloc on,
and after round 2 and round N prints the allocation sites (proxy64/trio/stdlib, by
traceback) that grew most in between: what the creep is made of. RSS figures in that
mode include the load generator and the tracing overhead; use it to find a cause, and
the plain mode for the figures.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # so `python bench/soak_memory.py` finds the package

from bench.loadgen import Origin, Target, raise_fd_limit, run_connections  # noqa: E402
from bench.run import Origins  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_argv(socks: int, http: int) -> list[str]:
    return [
        "serve",
        "--socks", f"127.0.0.1:{socks}",
        "--http", f"127.0.0.1:{http}",
        "--nat64-prefix", "64:ff9b::/96",
        "--egress", "nat64",
        "--log-level", "error",
    ]  # fmt: skip


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"proxy64 exited with {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"proxy64 did not listen on {port}")


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, limit: int) -> str:
    keep = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "*/bench/*"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "traceback")
    lines = []
    for stat in stats[:limit]:
        lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        lines.extend(f"      {line}" for line in stat.traceback.format(limit=8))
    return "\n".join(lines)


def soak(args: argparse.Namespace, pid: int, port: int, origin: Origin) -> list[float]:
    """The rounds, printing RSS after each; with --tracemalloc, the growth between round 2
    and round N (then it stops)."""
    target = Target(f"proxy64/{args.kind}", args.kind, ("127.0.0.1", port), "proxy64")
    print(f"proxy64 pid {pid}, {args.kind}, start RSS {rss_mib(pid):.1f} MiB", flush=True)
    first: tracemalloc.Snapshot | None = None
    series: list[float] = []
    for number in range(1, args.rounds + 1):
        started = time.perf_counter()
        result = run_connections(target, origin, args.conns, args.concurrency, args.round_limit)
        took = time.perf_counter() - started
        time.sleep(0.5)  # let the last records and closes finish
        rss = rss_mib(pid)
        series.append(rss)
        print(
            f"round {number:2d}: {result.done} ok, {result.errors} errors in {took:.1f} s,"
            f" RSS {rss:.1f} MiB" + (f" ({result.first_error})" if result.errors else ""),
            flush=True,
        )
        if args.tracemalloc and number == 2:
            first = tracemalloc.take_snapshot()
        if args.tracemalloc and number == args.tracemalloc and first is not None:
            print(top_growth(first, tracemalloc.take_snapshot(), 15), flush=True)
            break
    if len(series) > 1:
        print("RSS series (MiB): " + ", ".join(f"{x:.1f}" for x in series))
        if len(series) > 5:
            print(f"growth after round 5: {series[-1] - series[4]:+.1f} MiB")
    return series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--conns", type=int, default=5000, help="connections per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kind", choices=("socks5", "connect", "http"), default="socks5")
    parser.add_argument("--round-limit", type=float, default=120.0, help="seconds per round")
    parser.add_argument("--tracemalloc", type=int, metavar="N", default=0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    socks, http = free_port(), free_port()
    port = {"socks5": socks, "connect": http, "http": http}[args.kind]
    workdir = Path(tempfile.mkdtemp(prefix="proxy64-soak-"))
    origins = Origins(workdir)
    origin = Origin("::1", origins.port)
    try:
        if args.tracemalloc:
            # serve needs the main thread (signals); the load runs in a thread and stops
            # serve with SIGTERM when done
            from proxy64.cli import main as proxy64_main

            def load() -> None:
                try:
                    wait_listening(socks, None, timeout=120)
                    soak(args, os.getpid(), port, origin)
                finally:
                    os.kill(os.getpid(), signal.SIGTERM)

            tracemalloc.start(25)
            threading.Thread(target=load, daemon=True).start()
            proxy64_main(serve_argv(socks, http))
            return 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy64", *serve_argv(socks, http)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "proxy64.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        try:
            wait_listening(socks, proc)
            soak(args, proc.pid, port, origin)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        origins.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
