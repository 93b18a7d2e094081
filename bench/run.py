#!/usr/bin/env python3
"""Benchmark proxy64 against real peers and direct loopback, in one interleaved run.

    .venv/bin/python bench/run.py            # the full run (~10 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # seconds: small sizes, 1 round (the CI smoke test)

Starts its own origin (bench/origins.py) and every proxy (bench/peers.py) on loopback,
measures bulk throughput, connection rate/latency/CPU, time to first byte and idle-tunnel
memory, runs the component benchmarks (bench/bench_{dns64,packet,tun}.py) when present,
and writes bench/results/latest.{md,json}. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # so `python bench/run.py` finds the bench package

from bench import gc_pauses, loadgen, peers, report, topology  # noqa: E402
from bench.loadgen import Origin, Target  # noqa: E402

ALL_SERVERS = ["proxy64", "microsocks", "dante", "tinyproxy", "pproxy"]
SCRIPTS = ["bench_dns64.py", "bench_packet.py", "bench_tun.py"]

FULL = {
    "rounds": 3,
    "bulk_size": 1 << 30,
    "bulk_rounds": 2,
    "conns_c1": 400,
    "conns_c64": 2000,
    "echo_trips": 2000,
    "idle": "1000,5000",
    "capacity": 8000,
    "op_time_limit": 60.0,
    "workers_rounds": 4,
    "workers_conns": 4000,
}
QUICK = {
    "rounds": 1,
    "bulk_size": 4 << 20,
    "bulk_rounds": 1,
    "conns_c1": 40,
    "conns_c64": 200,
    "echo_trips": 200,
    "idle": "100",
    "capacity": 0,
    "op_time_limit": 20.0,
    "workers_rounds": 1,
    "workers_conns": 300,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    p.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma list of proxies to measure beside direct (default: {','.join(ALL_SERVERS)}); "
        "missing ones are skipped with a note unless --require is given",
    )
    p.add_argument("--require", default="", help="comma list of servers that must run (else fail)")
    p.add_argument(
        "--tests",
        default="idle,conn,echo,bulk,workers,capacity,scripts",
        help="phases to run (scaling: an old name of workers)",
    )
    p.add_argument(
        "--workers-rounds", type=int, help="rounds of the workers phase, 1 and 2 each (full: 4)"
    )
    p.add_argument(
        "--workers-conns", type=int, help="connections per workers-phase run (full: 4000)"
    )
    p.add_argument("--rounds", type=int, help="rounds of the connection tests (full: 3)")
    p.add_argument("--bulk-rounds", type=int, help="rounds of the bulk tests (full: 2)")
    p.add_argument("--bulk-size", type=int, help="bytes per bulk measurement (full: 1 GiB)")
    p.add_argument("--conns-c1", type=int, help="connections at concurrency 1 (full: 400)")
    p.add_argument("--conns-c64", type=int, help="connections at concurrency 64 (full: 2000)")
    p.add_argument("--echo-trips", type=int, help="round trips per echo measurement (full: 2000)")
    p.add_argument("--idle", help="idle tunnel counts, comma list (full: 1000,5000)")
    p.add_argument("--capacity", type=int, help="idle tunnels proxy64 must hold (full: 8000)")
    p.add_argument("--op-time-limit", type=float, help="seconds any one measurement may take")
    p.add_argument("--origin-host", default="::1", help="origin address the proxies dial")
    p.add_argument(
        "--cpus",
        type=cpu_list,
        help="run the harness, the origin and every proxy on these CPUs (comma list; `0`: all "
        "on one CPU, where the proxy competes with the endpoints for every cycle)",
    )
    p.add_argument(
        "--topology",
        choices=["loopback", "veth"],
        default="loopback",
        help="loopback: origin on --origin-host; veth: origin in another namespace behind a "
        "veth with RPS on the other CPU, proxies pinned to CPU 0 (root; see bench/topology.py)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="a directory holding another proxy64 package (git archive COMMIT proxy64 | tar -x "
        "-C DIR): measured as `proxy64-base` beside this tree's (add it to --servers)",
    )
    p.add_argument("--inside-veth", help=argparse.SUPPRESS)  # ORIGIN_NS,ADDRESS,CLIENT_IF
    p.add_argument(
        "--gc-stats",
        action="store_true",
        help="start proxy64 (and proxy64-base) through bench/gc_pauses.py and report their "
        "garbage-collector pauses over the run",
    )
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--stem", default="latest", help="output file name stem")
    p.add_argument(
        "--profile",
        choices=["cprofile", "pyspy", "cpu"],
        help="instead of benchmarking, profile proxy64 serve's per-connection path "
        "(writes bench/results/profile-TOOL-KIND.txt); cpu: no profiler, only the proxy's "
        "user and system CPU per connection",
    )
    p.add_argument("--profile-kind", choices=["socks5", "connect", "http"], default="socks5")
    p.add_argument(
        "--profile-in-flight",
        type=int,
        default=64,
        help="connections in flight while profiling (1: every event wakes the proxy alone)",
    )
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def cpu_list(text: str) -> set[int]:
    """--cpus: a comma list of CPU numbers this machine has."""
    try:
        cpus = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        cpus = set()
    have = os.sched_getaffinity(0)
    if not cpus or not cpus <= have:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of CPU numbers among {','.join(map(str, sorted(have)))}"
        )
    return cpus


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fd_limit_hard": loadgen.raise_fd_limit(),
    }


def git_commit() -> str:
    """The checkout measured (proxy64 is imported from this tree), '+dirty' if modified."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "proxy64"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    label = head + ("+dirty" if dirty else "")
    if os.environ.get("PYTHONPATH"):  # the servers import proxy64 from there, not this tree
        label += f" (proxy64 from PYTHONPATH={os.environ['PYTHONPATH']})"
    return label


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Origins:
    def __init__(self, workdir: Path, netns: str | None = None, listen: str | None = None) -> None:
        where = ["ip", "netns", "exec", netns] if netns else []
        addresses = ["--listen", listen] if listen else ["--listen", "::1", "--listen", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*where, sys.executable, str(BENCH_DIR / "origins.py"), *addresses],
            stdout=subprocess.PIPE,
            stderr=open(workdir / "origin.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"origin did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Recorder:
    def __init__(self) -> None:
        self.raw: dict[str, dict[str, list[float]]] = {}
        self.errors: dict[str, dict[str, str]] = {}

    def add(self, label: str, key: str, value: float) -> None:
        self.raw.setdefault(label, {}).setdefault(key, []).append(value)

    def error(self, label: str, test: str, why: str) -> None:
        self.errors.setdefault(label, {}).setdefault(test, why)
        log(f"  {label} {test}: {why}")


def measure_conns(
    rec: Recorder,
    target: Target,
    origin: Origin,
    server: peers.Server | None,
    args: argparse.Namespace,
) -> None:
    for conc, total in ((1, args.conns_c1), (64, args.conns_c64)):
        cpu0 = peers.tree_cpu_seconds(server.pid) if server else 0.0
        res = loadgen.run_connections(target, origin, total, conc, args.op_time_limit)
        cpu1 = peers.tree_cpu_seconds(server.pid) if server else 0.0
        if res.errors:
            rec.error(target.label, f"conn c{conc}", f"{res.errors} failed: {res.first_error}")
        if not res.done:
            continue
        tag = f"c{conc}"
        rec.add(target.label, f"{tag}_conn_s", res.done / res.elapsed)
        rec.add(target.label, f"{tag}_p50_us", report.percentile(res.latencies, 50) * 1e6)
        rec.add(target.label, f"{tag}_p99_us", report.percentile(res.latencies, 99) * 1e6)
        if server:
            key = "cpu_us_per_conn" if conc == 64 else "cpu_us_per_conn_c1"
            rec.add(target.label, key, (cpu1 - cpu0) / res.done * 1e6)
        if conc == 64:
            rec.add(target.label, "loadgen_cpu_us_per_conn", res.loadgen_cpu / res.done * 1e6)
        else:
            rec.add(target.label, "ttfb_p50_us", report.percentile(res.ttfb, 50) * 1e6)
            rec.add(target.label, "ttfb_p99_us", report.percentile(res.ttfb, 99) * 1e6)
        log(
            f"  {target.label:18} c{conc:<2} {res.done / res.elapsed:8.0f} conn/s"
            + (f"  {(cpu1 - cpu0) / res.done * 1e6:6.0f} µs proxy CPU/conn" if server else "")
        )


def with_gc_pauses(build: Callable[[peers.Server], list[str]]) -> Callable[..., list[str]]:
    """A server's argv started through bench/gc_pauses.py (same interpreter, same args)."""

    def build_gc(server: peers.Server) -> list[str]:
        argv = build(server)
        return [argv[0], str(BENCH_DIR / "gc_pauses.py"), *argv[1:]]

    return build_gc


def gc_pids(started: dict[str, peers.Server], gc_dir: Path) -> dict[str, int]:
    """Which stopped server wrote which gc_pauses file (the file is named by its PID)."""
    return {
        name: server.last_pid
        for name, server in started.items()
        if server.last_pid and (gc_dir / f"gc-{server.last_pid}.json").exists()
    }


def measure_echo(
    rec: Recorder,
    target: Target,
    origin: Origin,
    server: peers.Server | None,
    origin_pid: int,
    args: argparse.Namespace,
) -> None:
    """Round trips of a small request/response inside one established tunnel.

    The harness, the origin and the proxy run on one CPU meanwhile: a round trip is two
    wake-ups of the proxy, and a wake-up across CPUs costs several times one on the same
    CPU, so unpinned the figure follows where the scheduler put each process (one proxy64
    process measured twice its own figure on one port as on the other in one run)."""
    roots = [0, origin_pid] + ([server.pid] if server else [])
    try:
        with peers.pinned(roots, peers.PIN_CPU or 0):
            trips = loadgen.echo(target, origin, args.echo_trips, args.op_time_limit)
    except (OSError, loadgen.LoadError) as exc:
        rec.error(target.label, "echo", f"{type(exc).__name__}: {exc}")
        return
    p50 = report.percentile(trips, 50) * 1e6
    rec.add(target.label, "echo_p50_us", p50)
    rec.add(target.label, "echo_p99_us", report.percentile(trips, 99) * 1e6)
    log(f"  {target.label:18} echo {p50:8.1f} µs per round trip")


def measure_bulk(
    rec: Recorder,
    target: Target,
    origin: Origin,
    server: peers.Server | None,
    args: argparse.Namespace,
) -> None:
    for direction in ("download", "upload"):
        for streams in (1, 8):
            key = f"{direction[0]}l{streams}_MBps"
            cpu0 = peers.tree_cpu_seconds(server.pid) if server else 0.0
            res = loadgen.bulk(
                target, origin, direction, args.bulk_size, streams, args.op_time_limit
            )
            cpu1 = peers.tree_cpu_seconds(server.pid) if server else 0.0
            if res.error:
                rec.error(target.label, f"{direction} x{streams}", res.error)
                continue
            rec.add(target.label, key, res.mb_per_s)
            if server and streams == 1 and res.nbytes:
                # includes tunnel set-up (one connection: negligible at these sizes)
                rec.add(
                    target.label, f"{key[:3]}_cpu_s_per_GiB", (cpu1 - cpu0) / res.nbytes * 2**30
                )
            log(f"  {target.label:18} {direction:8} x{streams} {res.mb_per_s:8.0f} MB/s")


def measure_idle(
    server: peers.Server, target: Target, origin: Origin, count: int, time_limit: float
) -> dict[str, Any]:
    """Fresh server; open `count` tunnels, each with one small request, and hold them."""
    server.start()
    try:
        # one warm connection first, so lazily-initialised state is not billed to tunnels
        loadgen.run_connections(target, origin, 4, 1, time_limit)
        time.sleep(0.3)
        before = peers.tree_rss_kib(server.pid)
        res = loadgen.run_connections(target, origin, count, 64, time_limit, keep_open=True)
        time.sleep(0.5)
        after = peers.tree_rss_kib(server.pid)
        for sock in res.held:
            sock.close()
        out: dict[str, Any] = {
            "opened": len(res.held),
            "errors": res.errors,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_tunnel": (after - before) / len(res.held) if res.held else None,
        }
        if res.first_error:
            out["first_error"] = res.first_error
        return out
    finally:
        server.stop()


def proxy64_has_workers() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "proxy64", "serve", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "--workers" in out.stdout


def run_scripts(quick: bool, time_limit: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in SCRIPTS:
        path = BENCH_DIR / name
        if not path.exists():
            results[name] = {"error": "not present in this checkout"}
            continue
        argv = [sys.executable, str(path)] + (["--quick"] if quick else [])
        try:
            proc = subprocess.run(
                argv,
                check=False,
                capture_output=True,
                text=True,
                timeout=time_limit,
                cwd=BENCH_DIR.parent,
            )
        except subprocess.TimeoutExpired:
            results[name] = {"error": f"timed out after {time_limit:.0f} s"}
            continue
        data = _last_json(proc.stdout)
        if proc.returncode != 0 or data is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            results[name] = {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
            continue
        results[name] = {"data": data, "summary": _short(data)}
    return results


def _last_json(text: str) -> Any:
    text = text.strip()
    with contextlib.suppress(ValueError):
        return json.loads(text)
    for line in reversed(text.splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


def _short(data: Any) -> str:
    if isinstance(data, dict):
        items = [f"{k}={v:,.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items()]
        return ", ".join(items)[:400]
    return str(data)[:400]


def run_in_veth(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Build the veth topology, run this harness again inside its client namespace."""
    if os.geteuid() != 0:
        sys.stderr.write("--topology veth needs root (network namespaces, veth, RPS)\n")
        return 1
    given = list(argv if argv is not None else sys.argv[1:])
    with topology.veth_topology() as veth:
        inside = f"{veth.origin_ns},{veth.origin_address},{veth.client_if}"
        command = ["ip", "netns", "exec", veth.client_ns, sys.executable, __file__, *given]
        return subprocess.run([*command, "--inside-veth", inside], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline is not None:
        peers.BASELINE = args.baseline.resolve()
    if args.cpus:  # inherited by the origin, the proxies and the load processes
        os.sched_setaffinity(0, args.cpus)
    if args.topology == "veth" and not args.inside_veth:
        return run_in_veth(args, argv)
    origin_ns = origin_listen = None
    if args.inside_veth:
        origin_ns, origin_listen, client_if = args.inside_veth.split(",")
        args.origin_host = origin_listen
        peers.PIN_CPU = topology.PROXY_CPU
        peers.DANTE_EXTERNAL = client_if
    if args.profile:
        return profile_serve(args, origin_ns, origin_listen)
    started = datetime.now(UTC)
    meta = machine() | {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "bulk_rounds": args.bulk_rounds,
        "bulk_size": args.bulk_size,
        "conns_c1": args.conns_c1,
        "conns_c64": args.conns_c64,
        "echo_trips": args.echo_trips,
        "origin_host": args.origin_host,
        "topology": args.topology,
        "proxy_cpu": peers.PIN_CPU,
        "cpus": sorted(args.cpus) if args.cpus else None,
        "loadavg_start": loadavg(),
        "commit": git_commit(),
        "baseline": str(args.baseline) if args.baseline else None,
        "command": "python bench/run.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    tests = set(args.tests.split(","))
    wanted = [s for s in args.servers.split(",") if s]
    have, missing = peers.available_servers(wanted)
    required = [s for s in args.require.split(",") if s]
    if lost := [s for s in required if s in missing]:
        sys.stderr.write(f"required servers not available: {', '.join(lost)}\n")
        return 1
    for name in missing:
        log(f"skipping {name}: not installed")
    workdir = Path(tempfile.mkdtemp(prefix="proxy64-bench-"))
    rec = Recorder()
    idle: dict[str, Any] = {}
    extra: dict[str, Any] = {"missing_servers": missing}
    servers = {name: peers.make_server(name, workdir) for name in have}
    targets: list[tuple[Target, peers.Server | None]] = [(Target("direct", "direct"), None)]
    labels: list[str] = ["direct"]
    origins = Origins(workdir, origin_ns, origin_listen)
    origin = Origin(args.origin_host, origins.port)
    try:
        census = 200
        done = topology.connect_census(origin.host, origin.port, census)
        meta["connects_completed_in_syscall"] = f"{done} of {census}"
        log(f"origin on port {origins.port}; servers {have}; workdir {workdir}")
        log(f"{done} of {census} connects to the origin completed inside connect(2)")
        if "idle" in tests:
            counts = [int(c) for c in str(args.idle).split(",") if c]
            for server in servers.values():
                for target in server.targets():
                    if target.kind == "http":
                        continue  # forwarding holds no tunnel
                    for count in counts:
                        try:
                            out = measure_idle(server, target, origin, count, args.op_time_limit)
                        except Exception as exc:
                            rec.error(target.label, f"idle {count}", f"{type(exc).__name__}: {exc}")
                            continue
                        idle.setdefault(target.label, {})[str(count)] = out
                        kib = out.get("kib_per_tunnel") or 0.0
                        log(f"  {target.label:18} idle {count}: {kib:.1f} KiB/tunnel")
        gc_dir = Path(tempfile.mkdtemp(prefix="gc-", dir=workdir)) if args.gc_stats else None
        if gc_dir is not None:
            os.environ["P64_BENCH_GC"] = str(gc_dir)
            for name in ("proxy64", "proxy64-base"):
                if name in servers:
                    servers[name].build = with_gc_pauses(servers[name].build)
        started_ok: dict[str, peers.Server] = {}
        for name, server in servers.items():
            try:
                server.start()
                started_ok[name] = server
            except RuntimeError as exc:
                rec.error(name, "start", str(exc))
        targets += [(t, s) for s in started_ok.values() for t in s.targets()]
        labels = [t.label for t, _ in targets]
        rounds = max(
            args.rounds if tests & {"conn", "echo"} else 0,
            args.bulk_rounds if "bulk" in tests else 0,
        )
        for r in range(rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            log(f"round {r + 1}/{rounds}: {' '.join(t.label for t, _ in order)}")
            for target, serving in order:
                if "conn" in tests and r < args.rounds:
                    measure_conns(rec, target, origin, serving, args)
                if "echo" in tests and r < args.rounds:
                    measure_echo(rec, target, origin, serving, origins.proc.pid, args)
                if "bulk" in tests and r < args.bulk_rounds:
                    measure_bulk(rec, target, origin, serving, args)
        for server in started_ok.values():
            server.stop()
        if gc_dir is not None:
            extra["gc"] = {
                name: gc_pauses.summary(json.loads((gc_dir / f"gc-{pid}.json").read_text()))
                for name, pid in gc_pids(started_ok, gc_dir).items()
            }
        if "proxy64" in servers and "capacity" in tests and args.capacity:
            server = servers["proxy64"]
            target = next(t for t in server.targets() if t.kind == "socks5")
            try:
                out = measure_idle(server, target, origin, args.capacity, args.op_time_limit * 2)
                extra["capacity"] = {
                    "wanted": args.capacity,
                    "opened": out["opened"],
                    "errors": out["errors"],
                    "first_error": out.get("first_error", ""),
                    "kib_per_tunnel": out["kib_per_tunnel"],
                }
                log(f"  capacity: {out['opened']} of {args.capacity} idle tunnels open")
            except Exception as exc:
                rec.error("proxy64/socks5", "capacity", f"{type(exc).__name__}: {exc}")
        if "proxy64" in servers and tests & {"workers", "scaling"}:
            if proxy64_has_workers():
                extra["workers"] = measure_workers(
                    servers["proxy64"], origin, origins.proc.pid, args, rec
                )
            else:
                extra["workers_note"] = "proxy64 serve has no --workers option in this checkout"
        if "scripts" in tests:
            # always --quick: their full modes take minutes each and the whole run must stay
            # under ~15 min on 2 shared cores; run them alone for precise figures
            extra["scripts"] = run_scripts(True, 180)
    finally:
        for server in servers.values():
            server.stop()
        origins.stop()
    finished = datetime.now(UTC)
    meta |= {
        "finished": finished.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "duration_s": (finished - started).total_seconds(),
        "loadavg_end": loadavg(),
    }
    kinds = {t.label: t.kind for t, _ in targets}
    summary = report.summarize(rec.raw, kinds)
    result: dict[str, Any] = {
        "meta": meta,
        "labels": labels,
        "kinds": kinds,
        "raw": rec.raw,
        "summary": summary,
        "idle": idle,
        "extra": extra,
        "errors": rec.errors,
    }
    result["goals"] = [g.as_dict() for g in report.goals(summary, idle, extra)]
    md_path, json_path = report.write(result, args.out_dir, args.stem)
    sys.stdout.write(report.markdown(result))
    log(f"wrote {md_path} and {json_path}")
    return 0


def pid_cpu(root: int) -> dict[int, float]:
    """utime+stime seconds of every live process of the tree, by PID."""
    out: dict[int, float] = {}
    for pid in peers.tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = peers._stat_fields(pid)
            out[pid] = (int(fields[11]) + int(fields[12])) / peers.CLK_TCK
    return out


def pid_switches(pids: list[int]) -> dict[int, int]:
    """Voluntary + involuntary context switches of each process (/proc/PID/status)."""
    out: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as f:
            total = 0
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
            out[pid] = total
    return out


class Scheduling(NamedTuple):
    """What the scheduler did with a process tree's threads, summed (live threads only)."""

    voluntary: int  # context switches: the thread slept (waited for an event)
    involuntary: int  # ... it was preempted while runnable
    waiting: float  # seconds runnable but not running (/proc/PID/task/TID/schedstat)


def tree_scheduling(root: int) -> Scheduling:
    """Scheduling counts of every thread of the process tree under root."""
    voluntary = involuntary = waiting_ns = 0
    for pid in peers.tree_pids(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # the process ended meanwhile
            continue
        for tid in tids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                task = f"/proc/{pid}/task/{tid}"
                with open(f"{task}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            voluntary += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            involuntary += int(line.split()[1])
                with open(f"{task}/schedstat") as f:
                    waiting_ns += int(f.read().split()[1])
    return Scheduling(voluntary, involuntary, waiting_ns / 1e9)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (idle = idle + iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def serve_workers(server: peers.Server) -> list[int]:
    """The PIDs that accept: the serve process itself, or its children with --workers N."""
    kids = [pid for pid in peers.tree_pids(server.pid) if pid != server.pid]
    return kids or [server.pid]


def measure_workers(
    server: peers.Server, origin: Origin, origin_pid: int, args: argparse.Namespace, rec: Recorder
) -> dict[str, Any]:
    """proxy64 serve with 1 and 2 workers, interleaved (1 2, 2 1, ...), driven by 2 load
    processes at 64 in flight in all. Per round: conn/s; each worker's CPU share and
    connections; the load processes', the origin's and the whole machine's CPU; so the
    report can say whether the proxy or the machine was the limit (report.workers_lines).
    """
    samples: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    counts_dir = Path(tempfile.mkdtemp(prefix="proxy64-bench-counts-"))
    base = server.build

    def build(s: peers.Server) -> list[str]:
        argv = base(s)  # [python, -m, proxy64, serve, ...] -> counted
        return [argv[0], str(BENCH_DIR / "serve_counted.py"), *argv[3:]]

    server.build = build
    os.environ["P64_BENCH_COUNTS"] = str(counts_dir)
    try:
        for r in range(args.workers_rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                for old in counts_dir.glob("accepts-*"):
                    old.unlink()
                peers.PROXY64_WORKERS = workers
                server.start()
                try:
                    target = next(t for t in server.targets() if t.kind == "socks5")
                    loadgen.run_connections(target, origin, 100, 8, args.op_time_limit)  # warm
                    pids = serve_workers(server)
                    sw0 = pid_switches(pids)
                    cpu0, ocpu0, m0 = (
                        pid_cpu(server.pid),
                        peers.tree_cpu_seconds(origin_pid),
                        (machine_ticks()),
                    )
                    res = loadgen.run_connections_parallel(
                        target, origin, args.workers_conns, 64, args.op_time_limit, processes=2
                    )
                    cpu1, ocpu1, m1 = (
                        pid_cpu(server.pid),
                        peers.tree_cpu_seconds(origin_pid),
                        (machine_ticks()),
                    )
                    sw1 = pid_switches(pids)
                finally:
                    server.stop()
                    peers.PROXY64_WORKERS = 1
                if res.errors:
                    rec.error(
                        f"proxy64 --workers {workers}",
                        "workers",
                        f"{res.errors} failed: {res.first_error}",
                    )
                if not res.done or res.elapsed <= 0:
                    continue
                wall = res.elapsed
                busy, total = m1[0] - m0[0], m1[1] - m0[1]
                counts = {}
                for path in counts_dir.glob("accepts-*"):
                    with contextlib.suppress(ValueError):
                        counts[int(path.name.split("-")[1])] = int(path.read_text())
                proxy_cpu = sum(cpu1.get(p, 0.0) - cpu0.get(p, 0.0) for p in cpu1)
                sample: dict[str, Any] = {
                    "conn_s": res.conn_per_s,
                    "done": res.done,
                    "errors": res.errors,
                    "worker_cpu_pct": sorted(
                        (100 * (cpu1.get(p, 0.0) - cpu0.get(p, 0.0)) / wall for p in pids),
                        reverse=True,
                    ),
                    "worker_conns": sorted((counts.get(p, 0) for p in pids), reverse=True),
                    "proxy_cpu_pct": 100 * proxy_cpu / wall,
                    "loadgen_cpu_pct": [100 * c / wall for c in res.cpu],
                    "origin_cpu_pct": 100 * (ocpu1 - ocpu0) / wall,
                    "machine_busy_pct": 100 * CORES * busy / total if total else 0.0,
                    "proxy_us_per_conn": proxy_cpu / res.done * 1e6,
                    "loadgen_us_per_conn": sum(res.cpu) / res.done * 1e6,
                    "origin_us_per_conn": (ocpu1 - ocpu0) / res.done * 1e6,
                    # fewer connections per wake-up = more switches: the batching lost
                    "proxy_switches_per_conn": sum(sw1.get(p, 0) - sw0.get(p, 0) for p in pids)
                    / res.done,
                    "loadgen_switches_per_conn": sum(res.switches) / res.done,
                    "loadavg": os.getloadavg()[0],
                }
                samples[str(workers)].append(sample)
                log(
                    f"  workers={workers} {res.conn_per_s:6.0f} conn/s; workers CPU "
                    + "/".join(f"{c:.0f}" for c in sample["worker_cpu_pct"])
                    + " %, conns "
                    + "/".join(str(c) for c in sample["worker_conns"])
                    + "; load gen "
                    + "/".join(f"{c:.0f}" for c in sample["loadgen_cpu_pct"])
                    + f" %, origin {sample['origin_cpu_pct']:.0f} %, "
                    f"machine busy {sample['machine_busy_pct']:.0f} % of {100 * CORES}"
                )
    finally:
        server.build = base
        os.environ.pop("P64_BENCH_COUNTS", None)
        for old in counts_dir.glob("*"):
            old.unlink()
        counts_dir.rmdir()
    return report.workers_summary(samples, CORES) | {"samples": samples}


CORES = os.cpu_count() or 1


# --- profiling the per-connection path (docs/performance-design.md) -----------------------


def profile_serve(
    args: argparse.Namespace, origin_ns: str | None = None, origin_listen: str | None = None
) -> int:
    """Drive SOCKS5/CONNECT connections through one proxy64 under cProfile or py-spy.

    cProfile: the serve process runs under `python -m cProfile -o FILE`, stops on SIGTERM
    (serve exits cleanly), and the top functions are written as text. py-spy samples the
    running process (--nonblocking, so it does not pause it) into collapsed stacks, which
    are summed per function (self = leaf samples, total = samples with it on the stack).
    """
    import pstats

    tool, kind = args.profile, args.profile_kind
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="proxy64-profile-"))
    name = "proxy64-base" if args.baseline is not None else "proxy64"
    server = peers.make_server(name, workdir)
    prof_path = workdir / "serve.prof"
    base = server.build
    if tool == "cprofile":

        def build(s: peers.Server) -> list[str]:
            argv = base(s)
            return [argv[0], "-m", "cProfile", "-o", str(prof_path), *argv[1:]]

        server.build = build
    origins = Origins(workdir, origin_ns, origin_listen)
    origin = Origin(args.origin_host, origins.port)
    raw_path = workdir / "pyspy.txt"
    try:
        server.start()
        target = next(t for t in server.targets() if t.kind == kind)
        loadgen.run_connections(target, origin, 200, 64, 30)  # warm-up, not sampled
        spy = [
            peers.find_tool("py-spy") or "py-spy",
            "record",
            "--nonblocking",
            "--rate",
            "1000",
            "--format",
            "raw",
            "-o",
            str(raw_path),
            "--pid",
            str(server.pid),
        ]
        with peers.recording(spy if tool == "pyspy" else None):
            user0, system0 = peers.tree_cpu_split(server.pid)
            sched0 = tree_scheduling(server.pid)
            in_flight = args.profile_in_flight
            res = loadgen.run_connections(
                target, origin, args.conns_c64, in_flight, args.op_time_limit
            )
            user1, system1 = peers.tree_cpu_split(server.pid)
            sched1 = tree_scheduling(server.pid)
        done = max(1, res.done)
        user, system = (user1 - user0) / done * 1e6, (system1 - system0) / done * 1e6
        per_conn = user + system
        # Each voluntary switch is a wake-up of the proxy; at 1 in flight their cost (and
        # the cold caches after them) is most of the CPU per connection.
        slept = (sched1.voluntary - sched0.voluntary) / done
        preempted = (sched1.involuntary - sched0.involuntary) / done
        waited = (sched1.waiting - sched0.waiting) / done * 1e6
        switches = (
            f"{slept:.2f} sleeps and {preempted:.2f} preemptions per connection, "
            f"{waited:.0f} µs runnable but waiting for the CPU"
        )
        log(
            f"{res.done} connections, {res.errors} errors, {per_conn:.0f} µs proxy CPU each "
            f"(user {user:.0f}, system {system:.0f}); {switches}"
        )
    finally:
        server.stop()
        origins.stop()
    lines = [
        f"# {name} serve, {kind}, {res.done} connections at {in_flight} in flight, tool {tool}, "
        f"topology {args.topology}",
        f"# proxy CPU per connection during the run: {per_conn:.0f} µs "
        f"(user {user:.0f}, system {system:.0f}; profiler overhead included)",
        f"# scheduling: {switches}",
        "",
    ]
    if tool == "cprofile":
        import io

        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            stats = pstats.Stats(str(prof_path), stream=buf)
            stats.strip_dirs().sort_stats(order).print_stats(45)
            lines += [f"## sorted by {order}", buf.getvalue()]
    elif tool == "pyspy":
        lines += summarize_collapsed(raw_path.read_text(), res.done)
    stem = "" if args.stem == "latest" else f"-{args.stem}"
    path = out_dir / f"profile-{tool}-{kind}{stem}.txt"
    path.write_text("\n".join(lines) + "\n")
    log(f"wrote {path}")
    return 0


# (phase, substring of a stack that puts a sample in it), first match wins
PHASES = [
    ("close: aclose_forcefully (all callers)", "aclose_forcefully"),
    ("relay: send_eof / shutdown", "send_eof"),
    ("dial: Dialer (socket, connect, SocketStream)", "dialer.py"),
    ("handshake: SOCKS5/HTTP machines + reads + method reply", "_handshake"),
    ("handshake: SOCKS5/HTTP machines + reads + method reply", "_next_event"),
    ("handshake: SOCKS5/HTTP machines + reads + method reply", "h11"),
    ("handshake: SOCKS5/HTTP machines + reads + method reply", "socks_session.py"),
    ("relay: copy loop, nursery, tasks", "relay.py"),
    ("reply + per-connection bookkeeping (front end)", "executor.py"),
    ("reply + per-connection bookkeeping (front end)", "socks_server.py"),
    ("reply + per-connection bookkeeping (front end)", "http_server.py"),
    ("accept: serve_listeners, accept4, task spawn", "_serve_one_listener"),
    ("accept: serve_listeners, accept4, task spawn", "listeners.py"),
    ("trio scheduler / epoll (no proxy64 frame)", "unrolled_run"),
]


def phase_of(stack: str) -> str:
    for name, needle in PHASES:
        if needle in stack:
            return name
    return "unattributed (py-spy cut the stack at a coroutine boundary: socket wrappers)"


def summarize_collapsed(text: str, connections: int, top: int = 45) -> list[str]:
    """py-spy collapsed stacks (`f1;f2;f3 N`) → self and total samples per function."""
    selfs: dict[str, int] = {}
    totals: dict[str, int] = {}
    phases: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        phase = phase_of(stack)
        phases[phase] = phases.get(phase, 0) + count
        leaf = frames[-1]
        selfs[leaf] = selfs.get(leaf, 0) + count
        for frame in set(frames):
            totals[frame] = totals.get(frame, 0) + count
    out = [f"{total} samples over {connections} connections", "", "## phases of a connection"]
    for name, n in sorted(phases.items(), key=lambda kv: -kv[1]):
        out.append(f"{100 * n / total:6.2f}%  {n:7d}  {name}")
    out += ["", "## self (leaf) samples"]
    for name, n in sorted(selfs.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{100 * n / total:6.2f}%  {n:7d}  {name}")
    out += ["", "## total (on stack) samples"]
    for name, n in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{100 * n / total:6.2f}%  {n:7d}  {name}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
