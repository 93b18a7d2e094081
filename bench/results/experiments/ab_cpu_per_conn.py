"""A/B/C: proxy CPU per connection of `proxy64 serve` vs patched variants, interleaved.

    .venv/bin/python bench/results/experiments/ab_cpu_per_conn.py [ROUNDS] [idle] [lean] [old=DIR]

Each variant is a script that monkeypatches proxy64 and runs its CLI (this directory);
each round runs every variant × kind once, rotating the start, 2,000 connections at
64 in flight through bench/loadgen.py. Prints the median µs per connection.
With `idle`: memory per idle SOCKS5 tunnel at 2,000 tunnels instead (fresh server each).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from bench import loadgen, peers  # noqa: E402
from bench.run import Origins  # noqa: E402

# r1_r4_lean_serve.py patches the relay and accept loop as they were at commit 6ebd74f
# (before 1e89d21/a2c19a2/5171ec8 rewrote them); it applies only to that checkout.
VARIANTS = {
    "baseline": None,
    "R1": HERE / "r1_fast_close_serve.py",
}
if "lean" in sys.argv[2:]:
    VARIANTS["R1-R4"] = HERE / "r1_r4_lean_serve.py"
# `old=DIR`: also run the proxy64 package extracted in DIR (e.g. `git archive 6ebd74f proxy64
# | tar -x -C DIR`) to measure what landed since; its label is DIR's name
OLD = [Path(a.split("=", 1)[1]) for a in sys.argv[2:] if a.startswith("old=")]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    idle_mode = "idle" in sys.argv[2:]
    loadgen.raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="proxy64-ab-"))
    origins = Origins(workdir)
    origin = loadgen.Origin("::1", origins.port)
    servers: dict[str, peers.Server] = {}
    for label, script in VARIANTS.items():
        server = peers.make_server("proxy64", workdir)
        server.name = f"proxy64-{label}"
        if script is not None:
            base = server.build

            def build(s: peers.Server, base=base, script=script) -> list[str]:  # type: ignore[no-untyped-def]
                argv = base(s)
                return [argv[0], str(script), *argv[3:]]  # replaces `-m proxy64`

            server.build = build
        servers[label] = server
    for old_dir in OLD:
        server = peers.make_server("proxy64", workdir)
        server.name = f"proxy64-{old_dir.name}"
        base_old = server.build

        def build_old(s: peers.Server, base=base_old, where=old_dir) -> list[str]:  # type: ignore[no-untyped-def]
            return ["env", f"PYTHONPATH={where}", *base(s)]

        server.build = build_old
        servers[old_dir.name] = server
    cpu: dict[str, list[float]] = {}
    if idle_mode:
        from bench.run import measure_idle

        try:
            for r in range(rounds):
                items = list(servers.items())
                for label, server in items[r % len(items) :] + items[: r % len(items)]:
                    target = next(t for t in server.targets() if t.kind == "socks5")
                    out = measure_idle(server, target, origin, 2000, 60)
                    if out["kib_per_tunnel"] is not None:
                        cpu.setdefault(label, []).append(out["kib_per_tunnel"])
            for key, values in cpu.items():
                shown = ", ".join(f"{v:.1f}" for v in values)
                print(f"{key:18} {statistics.median(values):6.1f} KiB/idle tunnel  [{shown}]")
        finally:
            origins.stop()
        return
    try:
        for server in servers.values():
            server.start()
        items = list(servers.items())
        for r in range(rounds):
            for label, server in items[r % len(items) :] + items[: r % len(items)]:
                for target in server.targets():
                    c0 = peers.tree_cpu_seconds(server.pid)
                    res = loadgen.run_connections(target, origin, 2000, 64, 60)
                    c1 = peers.tree_cpu_seconds(server.pid)
                    assert res.errors == 0, res.first_error
                    key = f"{label}/{target.kind}"
                    cpu.setdefault(key, []).append((c1 - c0) / res.done * 1e6)
        for key, values in cpu.items():
            shown = ", ".join(f"{v:.0f}" for v in values)
            print(f"{key:18} {statistics.median(values):6.0f} µs/conn  [{shown}]")
    finally:
        for server in servers.values():
            server.stop()
        origins.stop()


if __name__ == "__main__":
    main()
