#!/usr/bin/env python3
"""Draw bench/results/latest.json as one PNG of bar charts (needs the `bench` extra).

    .venv/bin/python bench/chart.py [bench/results/latest.json] [-o bench/results/latest.png]

Six panels: bulk MB/s (1 tunnel both directions, 8 tunnels download), connections per
second at 64 in flight, proxy CPU per connection, idle memory per tunnel; with a workers
phase two more: conn/s and projected capacity for 1 and 2 workers, and where the
machine's CPU went (proxy, load generator, origin, other work). Bars are medians; the error
bars span min–max over rounds. proxy64 bars are drawn in a darker colour.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"


def _bars(ax: Any, labels: list[str], entries: list[dict[str, Any] | None], title: str) -> None:
    medians = [e["median"] if e else 0.0 for e in entries]
    lows = [e["median"] - e["min"] if e and "min" in e else 0.0 for e in entries]
    highs = [e["max"] - e["median"] if e and "max" in e else 0.0 for e in entries]
    colors = [
        "#1f4e79" if label.startswith("proxy64") else "#888888" if label == "direct" else "#9ecae1"
        for label in labels
    ]
    ax.barh(labels, medians, xerr=[lows, highs], color=colors, capsize=2)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    for y, value in enumerate(medians):
        if value:
            ax.text(value, y, f" {value:,.0f}", va="center", fontsize=6)


def _workers_panels(rate_ax: Any, cpu_ax: Any, by: dict[str, Any]) -> None:
    """serve --workers: conn/s and projected capacity; where the machine's CPU went."""
    counts = sorted(by)
    labels = [
        f"{w} worker{'s' if w != '1' else ''}: {what}"
        for what in ("conn/s", "capacity")
        for w in counts
    ]
    entries = [by[w]["conn_s"] for w in counts] + [by[w]["capacity_conn_s"] for w in counts]
    _bars(rate_ax, labels, entries, "serve --workers: conn/s and projected capacity")

    def share(e: dict[str, Any], part: str) -> float:
        if part == "load generator":
            return float(sum(e["loadgen_cpu_pct"]))
        key = {"proxy": "proxy_cpu_pct", "origin": "origin_cpu_pct", "other work": "other_cpu_pct"}
        return float(e[key[part]]["median"])

    parts = [
        ("proxy", "#1f4e79"),
        ("load generator", "#9ecae1"),
        ("origin", "#888888"),
        ("other work", "#dddddd"),
    ]
    left = [0.0] * len(counts)
    names = [f"{w} worker{'s' if w != '1' else ''}" for w in counts]
    for name, color in parts:
        widths = [share(by[w], name) for w in counts]
        cpu_ax.barh(names, widths, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    cpu_ax.invert_yaxis()
    cpu_ax.set_title("where the CPU went (% of one core; 200 = both cores)", fontsize=9)
    cpu_ax.tick_params(labelsize=7)
    cpu_ax.legend(fontsize=6, loc="lower right")


def draw(result: dict[str, Any], out: Path) -> None:
    summary = result["summary"]
    labels: list[str] = result["labels"]
    workers = result.get("extra", {}).get("workers", {}).get("by_workers", {})
    if workers and not any(summary.values()):  # a workers-phase run only
        fig, (rate_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 3.5))
        _workers_panels(rate_ax, cpu_ax, workers)
        meta = result["meta"]
        _save(fig, f"proxy64 serve --workers — {meta['started']}, {meta['nproc']} CPU, "
              f"load {meta['loadavg_start']}", out)  # fmt: skip
        return
    fig, axes = plt.subplots(2, 4 if workers else 3, figsize=(20 if workers else 15, 8.5))
    for ax, key, title in (
        (axes[0][0], "dl1_MBps", "download, 1 tunnel (MB/s)"),
        (axes[0][1], "ul1_MBps", "upload, 1 tunnel (MB/s)"),
        (axes[0][2], "dl8_MBps", "download, 8 tunnels (MB/s)"),
        (axes[1][0], "c64_conn_s", "connections/s, 64 in flight"),
    ):
        _bars(ax, labels, [summary.get(label, {}).get(key) for label in labels], title)
    proxied = [label for label in labels if label != "direct"]
    _bars(
        axes[1][1],
        proxied,
        [summary.get(label, {}).get("cpu_us_per_conn") for label in proxied],
        "proxy CPU per connection, 64 in flight (µs, lower is better)",
    )
    idle = result.get("idle", {})
    counts = sorted({int(c) for per in idle.values() for c in per})
    if counts:
        biggest = str(counts[-1])
        idle_labels = [label for label in labels if label in idle]
        idle_labels += [label for label in idle if label not in idle_labels]
        entries = [
            {"median": idle[label][biggest]["kib_per_tunnel"]}
            if idle[label].get(biggest, {}).get("kib_per_tunnel") is not None
            else None
            for label in idle_labels
        ]
        _bars(
            axes[1][2],
            idle_labels,
            entries,
            f"memory per idle tunnel at {int(biggest):,} (KiB, lower is better)",
        )
    if workers:
        _workers_panels(axes[0][3], axes[1][3], workers)
    meta = result["meta"]
    _save(fig, f"proxy64 vs peers vs direct loopback — {meta['started']}, {meta['nproc']} CPU, "
          f"load {meta['loadavg_start']}, mode {meta['mode']}", out)  # fmt: skip


def _save(fig: Any, title: str, out: Path) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.output or args.json.with_suffix(".png")
    draw(json.loads(args.json.read_text()), out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
