#!/usr/bin/env python3
"""Run a Python program with its garbage-collector pauses recorded: `python
bench/gc_pauses.py -m MODULE ARGS` or `python bench/gc_pauses.py SCRIPT ARGS`.

bench/run.py --gc-stats starts proxy64 (and proxy64-base) through this file. Every
collection's generation and duration (gc.callbacks, time.perf_counter) and what it
collected are kept in memory and written, when the process exits cleanly (serve does on
SIGTERM), to `$P64_BENCH_GC/gc-PID.json`. Why it matters: a full (generation 2)
collection walks the whole heap and stalls every connection in flight at once, so objects
that die in reference cycles (collected only by the GC) show up in the latency tail.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(os.environ.get("P64_BENCH_GC", "."))
_collections: list[tuple[int, float, int]] = []  # (generation, seconds, objects collected)
_started = [0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _collections.append(
            (int(info["generation"]), time.perf_counter() - _started[0], int(info["collected"]))
        )


def _write() -> None:
    (OUT / f"gc-{os.getpid()}.json").write_text(json.dumps(_collections))


def summary(collections: list[list[Any]]) -> dict[str, dict[str, float]]:
    """Per generation: how many collections, milliseconds in all, the longest, objects."""
    out: dict[str, dict[str, float]] = {}
    for generation in (0, 1, 2):
        times = [c[1] for c in collections if c[0] == generation]
        out[str(generation)] = {
            "collections": len(times),
            "total_ms": sum(times) * 1e3,
            "max_ms": max(times, default=0.0) * 1e3,
            "collected": sum(c[2] for c in collections if c[0] == generation),
        }
    return out


if __name__ == "__main__":
    gc.callbacks.append(_callback)
    atexit.register(_write)
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
