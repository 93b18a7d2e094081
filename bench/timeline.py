#!/usr/bin/env python3
"""Where one connection's time to first byte goes inside proxy64 serve: the gaps between
its system calls, from the accept to the write that hands the origin's answer to the
client, at one connection in flight (where every step is on the client's path).

    sudo .venv/bin/python bench/timeline.py --kind http            # a forwarded GET
    sudo .venv/bin/python bench/timeline.py --kind socks5 --baseline /tmp/base

Starts the bench origin (bench/origins.py) and `proxy64 serve` (or the tree at --baseline,
as bench/run.py does), warms up, records every system call entry and exit of the serve
process with `perf record -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit` while
--conns connections run, and prints, for the sequence of calls most connections follow,
the median time between consecutive calls: a gap between two calls is proxy64's own
work (Python), a call's own length is the kernel's. perf's overhead is in the figures
(each call costs it about 1 µs); compare runs of the same script, not these with
bench/run.py's. Needs root and perf (Debian: linux-perf).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # so `python bench/timeline.py` finds the package

from bench import loadgen, peers  # noqa: E402
from bench.loadgen import Origin  # noqa: E402

# x86-64 system call numbers of the calls a connection makes
SYSCALLS = {
    0: "read",
    1: "write",
    3: "close",
    7: "poll",
    16: "ioctl",
    19: "readv",
    20: "writev",
    41: "socket",
    42: "connect",
    43: "accept",
    44: "sendto",
    45: "recvfrom",
    51: "getsockname",
    52: "getpeername",
    54: "setsockopt",
    55: "getsockopt",
    232: "epoll_wait",
    233: "epoll_ctl",
    275: "splice",
    281: "epoll_pwait",
    288: "accept4",
}
# writes from the accept to the one that carries the origin's answer to the client
ANSWER_WRITE = {"http": 2, "connect": 3, "socks5": 4}
_LINE = re.compile(r"\s*([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)(.*)")


@dataclass(frozen=True)
class Call:
    at: float  # µs
    entering: bool
    name: str
    failed_again: bool  # an exit with EAGAIN (-11)

    @property
    def label(self) -> str:
        if self.entering:
            return f"{self.name}("
        return f"{self.name})" + (" EAGAIN" if self.failed_again else "")


@dataclass(frozen=True)
class Timeline:
    connections: int  # connections seen from accept to the answer's write
    usual: int  # of them, those that made the most common sequence of calls
    steps: list[tuple[str, float]]  # "from -> to", median µs
    total: float  # median µs from the accept to the answer written


def parse(lines: Iterable[str]) -> list[Call]:
    """`perf script -F time,event,trace` lines → calls (others are skipped)."""
    calls = []
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue
        number = int(match.group(3))
        calls.append(
            Call(
                at=float(match.group(1)) * 1e6,
                entering=match.group(2) == "enter",
                name=SYSCALLS.get(number, f"#{number}"),
                failed_again="= -11" in match.group(4),
            )
        )
    return calls


def timeline(calls: list[Call], answer_write: int) -> Timeline:
    """Each connection runs from an accept4 that returned a socket to the end of its
    answer_write-th write; the most common sequence of calls gives the steps."""
    runs: list[list[Call]] = []
    i = 0
    while i < len(calls):
        call = calls[i]
        if call.name == "accept4" and not call.entering and not call.failed_again:
            run, writes, i = [call], 0, i + 1
            while i < len(calls) and writes < answer_write:
                run.append(calls[i])
                if calls[i].name == "write" and not calls[i].entering:
                    writes += 1
                i += 1
            if writes == answer_write:
                runs.append(run)
        else:
            i += 1
    if not runs:
        return Timeline(0, 0, [], 0.0)
    shapes = collections.Counter(tuple(c.label for c in run) for run in runs)
    usual_shape = shapes.most_common(1)[0][0]
    usual = [run for run in runs if tuple(c.label for c in run) == usual_shape]
    steps = [
        (
            f"{usual_shape[k - 1]} -> {usual_shape[k]}",
            statistics.median(run[k].at - run[k - 1].at for run in usual),
        )
        for k in range(1, len(usual_shape))
    ]
    total = statistics.median(run[-1].at - run[0].at for run in usual)
    return Timeline(len(runs), len(usual), steps, total)


def record(kind: str, conns: int, baseline: Path | None, out: Path) -> None:
    """Serve, warm up, and record conns connections at 1 in flight into out (perf.data)."""
    from bench.run import Origins

    workdir = Path(tempfile.mkdtemp(prefix="proxy64-timeline-"))
    peers.BASELINE = baseline
    server = peers.make_server("proxy64-base" if baseline else "proxy64", workdir)
    origins = Origins(workdir)
    origin = Origin("::1", origins.port)
    events = ["-e", "raw_syscalls:sys_enter", "-e", "raw_syscalls:sys_exit"]
    try:
        server.start()
        target = next(t for t in server.targets() if t.kind == kind)
        loadgen.run_connections(target, origin, 300, 1, 30)  # warm-up, not recorded
        perf = ["perf", "record", "-q", "-o", str(out), "-p", str(server.pid), *events]
        with peers.recording(perf):
            result = loadgen.run_connections(target, origin, conns, 1, 60)
        if result.errors:
            raise RuntimeError(f"{result.errors} of {conns} connections failed")
    finally:
        server.stop()
        origins.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=sorted(ANSWER_WRITE), default="http")
    p.add_argument("--conns", type=int, default=2000, help="connections recorded (1 in flight)")
    p.add_argument("--baseline", type=Path, help="a proxy64 tree to time instead of this one")
    args = p.parse_args(argv)
    if shutil.which("perf") is None:
        print("timeline: perf is not installed (Debian: apt install linux-perf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="proxy64-timeline-") as tmp:
        data = Path(tmp) / "perf.data"
        record(args.kind, args.conns, args.baseline, data)
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "time,event,trace"],
            capture_output=True,
            text=True,
            check=True,
        )
    result = timeline(parse(script.stdout.splitlines()), ANSWER_WRITE[args.kind])
    if not result.usual:
        print("timeline: no whole connection in the recording", file=sys.stderr)
        return 1
    print(
        f"{args.kind}: {result.connections} connections, {result.usual} made the usual "
        f"sequence of {len(result.steps) + 1} calls; median µs from one call to the next:"
    )
    for step, gap in result.steps:
        print(f"{gap:8.1f}  {step}")
    print(f"{result.total:8.1f}  in all, accept to the answer written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
