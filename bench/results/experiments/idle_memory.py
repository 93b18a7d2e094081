"""Which Python allocations does one idle proxy64 tunnel hold? (tracemalloc diff)

    .venv/bin/python bench/results/experiments/idle_memory.py [TUNNELS] [socks5|connect]

Starts serve under tracemalloc_serve.py, warms up, snapshots, opens TUNNELS idle tunnels
(each with one small request, like bench/run.py's idle test), snapshots again and prints
the allocation sites that grew, in bytes per tunnel.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from bench import loadgen, peers  # noqa: E402
from bench.run import Origins  # noqa: E402


def snapshot(pid: int, snapdir: Path, n: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    done = snapdir / f"{n}.snap.done"
    deadline = time.monotonic() + 60
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no snapshot from the server")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(str(snapdir / f"{n}.snap"))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    kind = sys.argv[2] if len(sys.argv) > 2 else "socks5"
    loadgen.raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="proxy64-idle-"))
    os.environ["P64_SNAPSHOT_DIR"] = str(workdir)
    origins = Origins(workdir)
    origin = loadgen.Origin("::1", origins.port)
    server = peers.make_server("proxy64", workdir)
    base = server.build

    def build(s: peers.Server) -> list[str]:
        argv = base(s)
        return [argv[0], str(HERE / "tracemalloc_serve.py"), *argv[3:]]

    server.build = build
    try:
        server.start()
        target = next(t for t in server.targets() if t.kind == kind)
        loadgen.run_connections(target, origin, 50, 8, 30)
        before = snapshot(server.pid, workdir, 0)
        rss0 = peers.tree_rss_kib(server.pid)
        res = loadgen.run_connections(target, origin, count, 64, 120, keep_open=True)
        time.sleep(0.5)
        rss1 = peers.tree_rss_kib(server.pid)
        after = snapshot(server.pid, workdir, 1)
        held = len(res.held)
        for sock in res.held:
            sock.close()
        stats = after.compare_to(before, "traceback")
        grown = sum(s.size_diff for s in stats if s.size_diff > 0)
        print(
            f"{held} idle {kind} tunnels; RSS {(rss1 - rss0) / held:.1f} KiB/tunnel "
            f"(tracemalloc on), Python allocations {grown / held / 1024:.1f} KiB/tunnel"
        )
        # grouped by the line that allocated (a coroutine frame counts at its call site)
        for stat in after.compare_to(before, "lineno")[:20]:
            if stat.size_diff <= 0:
                continue
            frame = stat.traceback[0]
            where = "/".join(Path(frame.filename).parts[-2:])
            print(
                f"{stat.size_diff / held:8.0f} B/tunnel  {stat.count_diff / held:5.1f} blocks  "
                f"{where}:{frame.lineno}"
            )
    finally:
        server.stop()
        origins.stop()


if __name__ == "__main__":
    main()
