"""Turn the harness's raw per-round samples into summary statistics, goals and markdown.

Pure data in, data/text out (no I/O except `write`). Every figure is the median over
rounds with its min–max; ratios are taken between medians of the same run:
  vs direct     target / direct (bulk: fraction of loopback speed kept)
  vs best peer  target / the best peer of the same protocol kind (not proxy64, not direct);
                for "lower is better" figures a ratio above 1 means worse than that peer.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# metric key -> (heading, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "dl1_MBps": ("download, 1 tunnel", "MB/s", True),
    "ul1_MBps": ("upload, 1 tunnel", "MB/s", True),
    "dl8_MBps": ("download, 8 tunnels", "MB/s", True),
    "ul8_MBps": ("upload, 8 tunnels", "MB/s", True),
    "dl1_cpu_s_per_GiB": ("proxy CPU per GiB, download, 1 tunnel", "s/GiB", False),
    "ul1_cpu_s_per_GiB": ("proxy CPU per GiB, upload, 1 tunnel", "s/GiB", False),
    "c1_conn_s": ("conn/s, 1 in flight", "conn/s", True),
    "c64_conn_s": ("conn/s, 64 in flight", "conn/s", True),
    "c1_p50_us": ("latency p50, 1 in flight", "µs", False),
    "c1_p99_us": ("latency p99, 1 in flight", "µs", False),
    "c64_p50_us": ("latency p50, 64 in flight", "µs", False),
    "c64_p99_us": ("latency p99, 64 in flight", "µs", False),
    "cpu_us_per_conn": ("proxy CPU per connection (64 in flight)", "µs", False),
    "cpu_us_per_conn_c1": ("proxy CPU per connection (1 in flight)", "µs", False),
    "loadgen_cpu_us_per_conn": ("load generator CPU per connection", "µs", False),
    "ttfb_p50_us": ("time to first byte p50", "µs", False),
    "ttfb_p99_us": ("time to first byte p99", "µs", False),
    "echo_p50_us": ("echo round trip p50, inside one tunnel", "µs", False),
    "echo_p99_us": ("echo round trip p99, inside one tunnel", "µs", False),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def stat(values: list[float]) -> Stat | None:
    if not values:
        return None
    return Stat(statistics.median(values), min(values), max(values), len(values))


def summarize(raw: dict[str, dict[str, list[float]]], kinds: dict[str, str]) -> dict[str, Any]:
    """raw[label][metric] = per-round values; kinds[label] = direct/socks5/connect/http."""
    summary: dict[str, dict[str, Any]] = {}
    for label, metrics in raw.items():
        summary[label] = {}
        for key, values in metrics.items():
            st = stat(values)
            if st is not None:
                summary[label][key] = st.as_dict()
    direct = summary.get("direct", {})
    for label, entries in summary.items():
        server = label.split("/")[0]
        for key, entry in entries.items():
            higher = METRICS.get(key, ("", "", True))[2]
            if key in direct and direct[key]["median"] and label != "direct":
                entry["vs_direct"] = entry["median"] / direct[key]["median"]
            peers = [
                (other, m[key]["median"])
                for other, m in summary.items()
                if key in m
                and kinds[other] == kinds[label]
                and other.split("/")[0] not in ("proxy64", "proxy64-base", "direct", server)
                and m[key]["median"] > 0
            ]
            if peers:
                best = max(peers, key=lambda p: p[1]) if higher else min(peers, key=lambda p: p[1])
                entry["best_peer"] = best[0]
                entry["vs_best_peer"] = entry["median"] / best[1] if best[1] else None
    if "ttfb_p50_us" in direct:
        for label, entries in summary.items():
            for q in ("p50", "p99"):
                key = f"ttfb_{q}_us"
                if key in entries and label != "direct":
                    entries[f"ttfb_overhead_{q}_us"] = {
                        "median": entries[key]["median"] - direct[key]["median"]
                    }
    return summary


COST_NOTES = [
    "How these are measured: *proxy CPU per connection* = utime+stime of every process of "
    "the proxy's tree from /proc/PID/stat (+ cutime/cstime of reaped children), the delta "
    "over one run divided by the connections it completed (64 in flight: `--conns-c64` "
    "connections; 1 in flight: `--conns-c1`); /proc counts in clock ticks of 10 ms, so a "
    "run needs ≥ ~1,000 connections for a figure within a few %. It includes the kernel "
    "work done in the proxy's processes (accept, connect, socket I/O). *Load generator CPU "
    "per connection* = getrusage(RUSAGE_SELF) of the harness process over the same "
    "64-in-flight run. *Time to first byte* = from the load generator's connect() to the "
    "first byte of the origin's HTTP response, per connection at 1 in flight, taken with "
    "time.perf_counter in the generator; the overhead columns are the target's median minus "
    "direct's median in the same run.",
]


ECHO_NOTES = [
    "How this is measured: one tunnel per target and round, opened and warmed by one "
    "exchange; then `--echo-trips` keep-alive `GET /1` requests, each sent only after the "
    "previous response was read whole (blocking socket, TCP_NODELAY); p50/p99 over the "
    "trips of a round, median (min–max) over rounds · ratio to direct, where the same "
    "requests go straight to the origin (the floor). `http` targets forward each request "
    "(proxy64 keeps the client connection alive between them).",
]


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:,.{digits}f}"


def cell(entry: dict[str, Any] | None, *, ratio: str | None = None) -> str:
    if not entry:
        return "–"
    text = f"{fmt(entry['median'])} ({fmt(entry['min'])}–{fmt(entry['max'])})"
    if ratio and entry.get(ratio) is not None:
        text += f" · {entry[ratio]:.2f}×"
    return text


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


@dataclass(frozen=True)
class Goal:
    name: str
    measured: str
    met: bool | None  # None: not measured

    def as_dict(self) -> dict[str, Any]:
        return {"goal": self.name, "measured": self.measured, "met": self.met}


def _median(summary: dict[str, Any], label: str, key: str, field: str = "median") -> float | None:
    entry = summary.get(label, {}).get(key)
    if not entry:
        return None
    value = entry.get(field)
    return float(value) if value is not None else None


def goals(summary: dict[str, Any], idle: dict[str, Any], extra: dict[str, Any]) -> list[Goal]:
    out: list[Goal] = []

    def ratio_goal(label: str, key: str, floor: float) -> None:
        r = _median(summary, label, key, "vs_direct")
        out.append(
            Goal(
                f"{label} {METRICS[key][0]} ≥ {floor}× direct",
                "not measured" if r is None else f"{r:.2f}×",
                None if r is None else r >= floor,
            )
        )

    for label in ("proxy64/socks5", "proxy64/connect"):
        ratio_goal(label, "dl1_MBps", 0.7)
        ratio_goal(label, "ul1_MBps", 0.7)
    ratio_goal("proxy64/http", "dl1_MBps", 0.5)
    ratio_goal("proxy64/http", "ul1_MBps", 0.5)
    for label in ("proxy64/socks5", "proxy64/connect", "proxy64/http"):
        cpu = _median(summary, label, "cpu_us_per_conn")
        out.append(
            Goal(
                f"{label} proxy CPU per connection ≤ 150 µs",
                "not measured" if cpu is None else f"{cpu:.0f} µs",
                None if cpu is None else cpu <= 150,
            )
        )
        over = summary.get(label, {}).get("ttfb_overhead_p50_us", {}).get("median")
        out.append(
            Goal(
                f"{label} TTFB overhead p50 ≤ 150 µs",
                "not measured" if over is None else f"{over:.0f} µs",
                None if over is None else over <= 150,
            )
        )
    for label in ("proxy64/socks5", "proxy64/connect"):
        for count, entry in sorted(idle.get(label, {}).items(), key=lambda kv: int(kv[0])):
            kib = entry.get("kib_per_tunnel")
            ok = kib is not None and entry.get("opened") == int(count)
            out.append(
                Goal(
                    f"{label} ≤ 10 KiB per idle tunnel at {count}",
                    f"{fmt(kib, 1)} KiB, {entry.get('opened')} of {count} opened",
                    None if kib is None else (ok and kib <= 10),
                )
            )
    cap = extra.get("capacity")
    if cap:
        out.append(
            Goal(
                f"proxy64 holds {cap['wanted']} idle tunnels within the fd limit",
                f"{cap['opened']} opened, {cap['errors']} failed"
                + (f" ({cap['first_error']})" if cap.get("first_error") else ""),
                cap["opened"] == cap["wanted"],
            )
        )
    out += workers_goals(extra)
    return out


def workers_goals(extra: dict[str, Any]) -> list[Goal]:
    w = extra.get("workers")
    scaling = extra.get("scaling")  # results written before the workers phase existed
    if scaling and scaling.get("ratio_c64") is not None and not w:
        return [
            Goal(
                "serve --workers 2 scales conn/s (64 in flight) over 1 worker",
                f"{scaling['ratio_c64']:.2f}× conn/s, "
                f"{scaling.get('ratio_dl8', 0):.2f}× 8-tunnel download",
                scaling["ratio_c64"] > 1.2,
            )
        ]
    if not w or w.get("ratio_capacity") is None:
        note = extra.get("workers_note") or extra.get("scaling_note") or "not measured"
        return [Goal("serve --workers scaling 1 → 2", note, None)]
    two = w["by_workers"]["2"]
    share = two["busiest_conn_share"]["median"]
    bound = w["bound"]
    return [
        Goal(
            "serve --workers 2: SO_REUSEPORT gives each worker 40–60 % of the connections",
            f"busiest worker {100 * share:.0f} %",
            None if share != share else 0.4 <= share <= 0.6,
        ),
        Goal(
            "serve --workers 2: projected capacity ≥ 1.6× one worker (no shared bottleneck)",
            f"{w['ratio_capacity']:.2f}×",
            w["ratio_capacity"] >= 1.6,
        ),
        Goal(
            "serve --workers 2: conn/s ratio ≥ 0.8 × the best this machine allows",
            f"{w['ratio_conn_s']:.2f}× measured, {bound['best_ratio']:.2f}× allowed",
            w["ratio_conn_s"] >= 0.8 * bound["best_ratio"],
        ),
    ]


def markdown(result: dict[str, Any]) -> str:
    summary: dict[str, Any] = result["summary"]
    labels: list[str] = result["labels"]
    meta = result["meta"]
    lines = [
        "# proxy64 benchmark results",
        "",
        f"Run {meta['started']} → {meta['finished']} ({meta['duration_s']:.0f} s), "
        f"mode `{meta['mode']}`: {meta['rounds']} connection round(s) "
        f"({meta['conns_c1']:,} connections at 1 in flight, {meta['conns_c64']:,} at 64), "
        f"{meta.get('bulk_rounds', '?')} bulk round(s) of {meta['bulk_size'] / 2**20:,.0f} MiB "
        "per figure; targets interleaved with a rotating start.",
        f"Machine: {meta['nproc']} CPU ({meta['cpu_model']}), kernel {meta['kernel']}, "
        f"Python {meta['python']}; load average at start {meta['loadavg_start']}, "
        f"at end {meta['loadavg_end']} (the machine is shared with other engineers' tests).",
        *(
            [f"Every process of the run on CPU {','.join(map(str, meta['cpus']))} (`--cpus`)."]
            if meta.get("cpus")
            else []
        ),
        f"Command: `{meta['command'].strip()}` at commit {meta.get('commit', 'unknown')}. "
        f"Origin: bench/origins.py on [{meta['origin_host']}]; "
        "every proxy dials it by IPv6 literal.",
        "",
        "Cells: median (min–max) over rounds · ratio. Ratios are between medians of this run.",
        "",
        "## Bulk throughput (MB/s; ratio = × direct)",
        "",
    ]
    bulk_keys = ["dl1_MBps", "ul1_MBps", "dl8_MBps", "ul8_MBps"]
    rows = [
        [f"`{label}`"] + [cell(summary.get(label, {}).get(k), ratio="vs_direct") for k in bulk_keys]
        for label in labels
    ]
    lines += table(["target"] + [METRICS[k][0] for k in bulk_keys], rows)
    gib_keys = ["dl1_cpu_s_per_GiB", "ul1_cpu_s_per_GiB"]
    gib_rows = [
        [f"`{label}`"]
        + [
            f"{fmt(e['median'], 2)} ({fmt(e['min'], 2)}–{fmt(e['max'], 2)})" if e else "–"
            for e in (summary.get(label, {}).get(k) for k in gib_keys)
        ]
        for label in labels
        if any(k in summary.get(label, {}) for k in gib_keys)
    ]
    if gib_rows:
        lines += ["", "## Proxy CPU seconds per GiB moved (1 tunnel; lower is better)", ""]
        lines += table(["target", "download", "upload"], gib_rows)
    lines += ["", "## Connections (handshake + GET of 1 byte + close)", ""]
    conn_keys = ["c1_conn_s", "c64_conn_s", "c1_p50_us", "c1_p99_us", "c64_p50_us", "c64_p99_us"]
    rows = [
        [f"`{label}`"] + [cell(summary.get(label, {}).get(k)) for k in conn_keys]
        for label in labels
    ]
    lines += table(["target"] + [f"{METRICS[k][0]} ({METRICS[k][1]})" for k in conn_keys], rows)
    lines += ["", "## Cost per connection and time to first byte (µs)", ""]
    cost_keys = [
        "cpu_us_per_conn",
        "cpu_us_per_conn_c1",
        "loadgen_cpu_us_per_conn",
        "ttfb_p50_us",
        "ttfb_p99_us",
    ]
    rows = []
    for label in labels:
        m = summary.get(label, {})
        rows.append(
            [f"`{label}`"]
            + [cell(m.get(k)) for k in cost_keys]
            + [
                fmt(m.get("ttfb_overhead_p50_us", {}).get("median")),
                fmt(m.get("ttfb_overhead_p99_us", {}).get("median")),
            ]
        )
    lines += table(
        ["target"]
        + [METRICS[k][0] for k in cost_keys]
        + ["TTFB overhead p50", "TTFB overhead p99"],
        rows,
    )
    lines += ["", *COST_NOTES]
    echo_keys = ["echo_p50_us", "echo_p99_us"]
    echo_rows = [
        [f"`{label}`"] + [cell(summary.get(label, {}).get(k), ratio="vs_direct") for k in echo_keys]
        for label in labels
        if any(k in summary.get(label, {}) for k in echo_keys)
    ]
    if echo_rows:
        lines += ["", "## Echo: one small request/response inside an established tunnel (µs)", ""]
        lines += table(["target", "round trip p50", "round trip p99"], echo_rows)
        lines += ["", *ECHO_NOTES]
    idle = result.get("idle", {})
    if idle:
        counts = sorted({int(c) for per in idle.values() for c in per})
        lines += [
            "",
            "## Memory per idle tunnel "
            "(KiB = RSS delta of the proxy's process tree / tunnels open)",
            "",
        ]
        rows = []
        ordered = [label for label in labels if label in idle]
        ordered += [label for label in idle if label not in ordered]
        for label in ordered:
            per = idle[label]
            row = [f"`{label}`"]
            for c in counts:
                e = per.get(str(c))
                row.append(
                    "–" if not e else f"{fmt(e.get('kib_per_tunnel'), 1)} ({e['opened']}/{c} open)"
                )
            rows.append(row)
        lines += table(["target"] + [f"{c:,} tunnels" for c in counts], rows)
    gc_rows = [
        [f"`{name}`"]
        + [
            f"{g[gen]['collections']:.0f} · {g[gen]['total_ms']:,.0f} · {g[gen]['max_ms']:,.1f}"
            for gen in ("0", "1", "2")
        ]
        + [f"{g['2']['collected']:,.0f}"]
        for name, g in result.get("extra", {}).get("gc", {}).items()
    ]
    if gc_rows:
        lines += [
            "",
            "## Garbage-collector pauses in the proxy over the run (`--gc-stats`)",
            "",
            "Cells: collections · ms in all · longest ms, per generation. A generation-2 "
            "collection walks the whole heap and stalls every connection in flight; objects "
            "that die in reference cycles wait for one.",
            "",
        ]
        lines += table(
            ["server", "generation 0", "generation 1", "generation 2", "objects freed by gen 2"],
            gc_rows,
        )
    vs_rows = []
    for label in labels:
        if not label.startswith(("proxy64/", "proxy64-base/")):
            continue
        for key in [
            "dl1_MBps",
            "ul1_MBps",
            "dl8_MBps",
            "ul8_MBps",
            "c64_conn_s",
            "cpu_us_per_conn",
            "ttfb_p50_us",
            "echo_p50_us",
        ]:
            e = summary.get(label, {}).get(key)
            if e and e.get("vs_best_peer") is not None:
                vs_rows.append(
                    [
                        f"`{label}`",
                        METRICS[key][0],
                        fmt(e["median"]),
                        f"`{e['best_peer']}`",
                        f"{e['vs_best_peer']:.2f}×",
                    ]
                )
    if vs_rows:
        lines += ["", "## proxy64 vs the best peer of the same protocol", ""]
        lines += table(["target", "figure", "proxy64", "best peer", "ratio"], vs_rows)
    extra = result.get("extra", {})
    if extra.get("scaling"):
        s = extra["scaling"]
        lines += ["", "## serve --workers scaling", ""]
        lines += table(
            ["workers", "conn/s 64 in flight", "download 8 tunnels MB/s", "proxy CPU µs/conn"],
            [
                [
                    str(w),
                    fmt(v.get("c64_conn_s")),
                    fmt(v.get("dl8_MBps")),
                    fmt(v.get("cpu_us_per_conn")),
                ]
                for w, v in s["by_workers"].items()
            ],
        )
    if extra.get("workers"):
        lines += ["", "## serve --workers: 1 vs 2 workers, interleaved", ""]
        lines += workers_lines(extra["workers"])
    scripts = extra.get("scripts", {})
    if scripts:
        lines += ["", "## Component benchmarks (bench/bench_*.py)", ""]
        for name, out in scripts.items():
            lines += script_lines(name, out)
    lines += ["", "## Goals", ""]
    lines += table(
        ["goal", "measured", "met"],
        [
            [g["goal"], g["measured"], {True: "yes", False: "**no**", None: "n/a"}[g["met"]]]
            for g in result["goals"]
        ],
    )
    errors = result.get("errors", {})
    if errors:
        lines += ["", "## Errors seen (first per target and test)", ""]
        lines += [f"- `{label}` {test}: {why}" for (label, test), why in _flatten(errors)]
    return "\n".join(lines) + "\n"


def script_lines(name: str, out: dict[str, Any]) -> list[str]:
    """A component benchmark's JSON as a short list: numbers and {median,min,max} entries."""
    if "data" not in out:
        return [f"- `{name}`: {out.get('error', 'no output')}"]
    data = out["data"]
    if not isinstance(data, dict):
        return [f"- `{name}`: {str(data)[:300]}"]
    items: list[tuple[str, str]] = []

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            if key in ("meta", "machine"):
                continue
            name = f"{prefix}{key}"
            if isinstance(value, dict) and "median" in value:
                low, high = value.get("min"), value.get("max")
                rng = f" ({fmt(low, 2)}–{fmt(high, 2)})" if low is not None else ""
                items.append((name, f"{fmt(value['median'], 2)}{rng}"))
            elif isinstance(value, dict):
                walk(f"{name}.", value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                items.append((name, fmt(value, 2 if isinstance(value, float) else 0)))

    walk("", data)
    if len(items) > 24 and any(k.endswith("_pps") for k, _ in items):
        items = [(k, v) for k, v in items if k.endswith("_pps")]  # rates only, when huge
    shown = "; ".join(f"{k} {v}" for k, v in items[:40])
    return [f"- `{name}`: {shown}"]


def _flatten(errors: dict[str, dict[str, str]]) -> list[tuple[tuple[str, str], str]]:
    return [((label, test), why) for label, per in errors.items() for test, why in per.items()]


def write(result: dict[str, Any], out_dir: Path, stem: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md_path.write_text(markdown(result))
    json_path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return md_path, json_path


def headline(result: dict[str, Any]) -> list[str]:
    """One row per target: the figures a user asks first, with ratios to direct."""
    summary: dict[str, Any] = result["summary"]
    idle: dict[str, Any] = result.get("idle", {})
    counts = sorted({int(c) for per in idle.values() for c in per})
    big = str(counts[-1]) if counts else None
    rows = []
    for label in result["labels"]:
        m = summary.get(label, {})

        def bulk(key: str, m: dict[str, Any] = m) -> str:
            e = m.get(key)
            if not e:
                return "–"
            ratio = f" ({e['vs_direct']:.2f}×)" if e.get("vs_direct") is not None else ""
            return f"{fmt(e['median'])}{ratio}"

        kib = idle.get(label, {}).get(big or "", {}).get("kib_per_tunnel") if big else None
        rows.append(
            [
                f"`{label}`",
                bulk("dl1_MBps"),
                bulk("ul1_MBps"),
                fmt(m.get("c64_conn_s", {}).get("median")),
                fmt(m.get("cpu_us_per_conn", {}).get("median")),
                fmt(m.get("ttfb_p50_us", {}).get("median")),
                fmt(m.get("ttfb_overhead_p50_us", {}).get("median")),
                fmt(kib, 1),
            ]
        )
    heads = [
        "target",
        "download 1 tunnel MB/s (× direct)",
        "upload 1 tunnel MB/s (× direct)",
        "conn/s, 64 in flight",
        "proxy CPU µs/conn",
        "TTFB p50 µs",
        "TTFB overhead p50 µs",
        f"KiB per idle tunnel at {int(big):,}" if big else "KiB per idle tunnel",
    ]
    return table(heads, rows)


# --- the workers phase (serve --workers 1 vs 2) ---------------------------------------


def _positions(rows: list[list[float]]) -> list[float]:
    """Median per position of equal-length lists (e.g. the busiest worker's, the other's)."""
    width = min((len(r) for r in rows), default=0)
    return [statistics.median(r[i] for r in rows) for i in range(width)]


def workers_summary(samples: dict[str, list[dict[str, Any]]], cores: int) -> dict[str, Any]:
    """Medians per worker count, the 2-vs-1 ratios and what this machine allows.

    capacity: conn/s ÷ the busiest worker's share of a core = the rate the proxy would
    reach if each worker had a core to itself (the projection is linear in CPU, so it is
    only as good as "CPU per connection does not change with load").
    machine bound: with proxy p, load generator l and origin o µs of CPU per connection,
    `cores` cores run at most cores·10⁶/(p+l+o) conn/s, whatever the proxy does; one worker
    runs at most 10⁶/p (one core). Their quotient is the best 1 → 2 ratio this box can show.
    """
    by: dict[str, Any] = {}
    for workers, rounds in samples.items():
        if not rounds:
            continue

        def st(values: list[float]) -> dict[str, float]:
            found = stat(values)
            assert found is not None
            return found.as_dict()

        conns = [sum(r["worker_conns"]) for r in rounds]
        by[workers] = {
            "rounds": len(rounds),
            "conn_s": st([r["conn_s"] for r in rounds]),
            "proxy_cpu_pct": st([r["proxy_cpu_pct"] for r in rounds]),
            "worker_cpu_pct": _positions([r["worker_cpu_pct"] for r in rounds]),
            "worker_conns": _positions([r["worker_conns"] for r in rounds]),
            "busiest_conn_share": st(
                [max(r["worker_conns"]) / c for r, c in zip(rounds, conns, strict=True) if c]
                or [float("nan")]
            ),
            "loadgen_cpu_pct": _positions([r["loadgen_cpu_pct"] for r in rounds]),
            "origin_cpu_pct": st([r["origin_cpu_pct"] for r in rounds]),
            "machine_busy_pct": st([r["machine_busy_pct"] for r in rounds]),
            # busy time of processes outside this test (other engineers, the harness's
            # sampling), clamped at 0: /proc tick rounding can make it slightly negative
            "other_cpu_pct": st(
                [
                    max(
                        0.0,
                        r["machine_busy_pct"]
                        - r["proxy_cpu_pct"]
                        - sum(r["loadgen_cpu_pct"])
                        - r["origin_cpu_pct"],
                    )
                    for r in rounds
                ]
            ),
            "proxy_us_per_conn": st([r["proxy_us_per_conn"] for r in rounds]),
            "loadgen_us_per_conn": st([r["loadgen_us_per_conn"] for r in rounds]),
            "origin_us_per_conn": st([r["origin_us_per_conn"] for r in rounds]),
            "proxy_switches_per_conn": st(
                [r.get("proxy_switches_per_conn", float("nan")) for r in rounds]
            ),
            "loadgen_switches_per_conn": st(
                [r.get("loadgen_switches_per_conn", float("nan")) for r in rounds]
            ),
            "capacity_conn_s": st(
                [
                    r["conn_s"] / (max(r["worker_cpu_pct"]) / 100)
                    for r in rounds
                    if r["worker_cpu_pct"] and max(r["worker_cpu_pct"]) > 0
                ]
                or [float("nan")]
            ),
            "loadavg": st([r["loadavg"] for r in rounds]),
        }
    out: dict[str, Any] = {"cores": cores, "by_workers": by}
    one, two = by.get("1"), by.get("2")
    if one and two:
        out["ratio_conn_s"] = two["conn_s"]["median"] / one["conn_s"]["median"]
        out["ratio_capacity"] = two["capacity_conn_s"]["median"] / one["capacity_conn_s"]["median"]
        p1 = one["proxy_us_per_conn"]["median"]
        p = two["proxy_us_per_conn"]["median"]
        rest = two["loadgen_us_per_conn"]["median"] + two["origin_us_per_conn"]["median"]
        rest1 = one["loadgen_us_per_conn"]["median"] + one["origin_us_per_conn"]["median"]
        # the cores left to this test: other processes' busy time is not ours to use
        left = max(0.0, cores - two["other_cpu_pct"]["median"] / 100)
        left1 = max(0.0, cores - one["other_cpu_pct"]["median"] / 100)
        bound_two = left * 1e6 / (p + rest)
        bound_one = min(1e6 / p1, left1 * 1e6 / (p1 + rest1))
        out["bound"] = {
            "proxy_us": p,
            "rest_us": rest,
            "cores_left": left,
            "two_workers_conn_s": bound_two,
            "one_worker_conn_s": bound_one,
            "best_ratio": bound_two / bound_one if bound_one else float("nan"),
            # even if a connection cost as much with 2 workers as with 1 (no batching lost)
            "ideal_ratio": (cores * 1e6 / (p1 + rest1)) / min(1e6 / p1, cores * 1e6 / (p1 + rest1)),
            "quiet_best_ratio": (cores * 1e6 / (p + rest))
            / min(1e6 / p1, cores * 1e6 / (p1 + rest1)),
        }
        out["machine_limited"] = two["machine_busy_pct"]["median"] >= 90 * cores
    return out


def workers_lines(w: dict[str, Any]) -> list[str]:
    """The workers phase as a table and the sentences that say what limited it."""
    by = w.get("by_workers", {})
    cores = w.get("cores", 2)
    rows = []
    for workers, e in sorted(by.items()):
        rows.append(
            [
                workers,
                cell(e["conn_s"]),
                " / ".join(fmt(v) for v in e["worker_cpu_pct"]),
                " / ".join(fmt(v) for v in e["worker_conns"]),
                " / ".join(fmt(v) for v in e["loadgen_cpu_pct"]),
                fmt(e["origin_cpu_pct"]["median"]),
                f"{fmt(e['machine_busy_pct']['median'])} of {100 * cores}",
                fmt(e["other_cpu_pct"]["median"]),
                fmt(e["proxy_us_per_conn"]["median"]),
                fmt(e["loadgen_us_per_conn"]["median"] + e["origin_us_per_conn"]["median"]),
                f"{fmt(e['proxy_switches_per_conn']['median'], 1)} / "
                f"{fmt(e['loadgen_switches_per_conn']['median'], 1)}",
                cell(e["capacity_conn_s"]),
            ]
        )
    lines = table(
        [
            "workers",
            "conn/s, 64 in flight (2 load processes)",
            "CPU % of each worker",
            "connections per worker",
            "CPU % of each load process",
            "origin CPU %",
            "machine busy %",
            "other work %",
            "proxy CPU µs/conn",
            "load gen + origin CPU µs/conn",
            "context switches per conn: proxy / load gen",
            "capacity, conn/s (projected)",
        ],
        rows,
    )
    lines += [
        "",
        "CPU % is of one core over the run's wall time (100 % = one core busy); "
        '"machine busy" is every CPU\'s non-idle time from /proc/stat; "other work" is '
        "the part of it not used by the proxy, the load processes or the origin (other "
        "engineers' runs on this shared machine). Connections per worker are counted in "
        "each worker (bench/serve_counted.py) and include 100 warm-up connections. "
        "Capacity = conn/s ÷ the busiest worker's share of a core: what the workers would "
        "reach with a core each (a projection). Context switches (voluntary + involuntary, "
        "/proc/PID/status and getrusage) per connection show lost batching: a process that "
        "wakes up for fewer connections at a time pays its wake-up more often.",
    ]
    bound = w.get("bound")
    if bound:
        lines += [
            "",
            f"Measured: 2 workers give {w['ratio_conn_s']:.2f}× the conn/s of 1 worker; "
            f"projected capacity {w['ratio_capacity']:.2f}×. "
            f"What this machine allows: the proxy costs {bound['proxy_us']:.0f} µs of CPU per "
            f"connection and the load generator + origin {bound['rest_us']:.0f} µs, all on "
            f"the same cores, of which other work left {bound['cores_left']:.2f} of {cores}: "
            f"at most {bound['cores_left']:.2f} × 10⁶ / "
            f"({bound['proxy_us']:.0f} + {bound['rest_us']:.0f}) = "
            f"{bound['two_workers_conn_s']:,.0f} conn/s, against "
            f"{bound['one_worker_conn_s']:,.0f} for one worker (one core, or what was left "
            f"if less): the best ratio this box could show in this run is "
            f"{bound['best_ratio']:.2f}× ({bound['quiet_best_ratio']:.2f}× with all "
            f"{cores} cores free for this test). Even if a connection cost no more with 2 "
            f"workers than with 1, {cores} cores would allow "
            f"{bound['ideal_ratio']:.2f}× one worker."
            + (
                " The machine was busy ≥ 90 % during the 2-worker runs: the machine, not "
                "the proxy, bounded the scaling."
                if w.get("machine_limited")
                else ""
            ),
        ]
    return lines


DOCS_INTRO = """# proxy64 performance

What proxy64 costs an app, measured beside direct loopback and four other proxies
(microsocks, dante, tinyproxy, pproxy) in one interleaved run of the benchmark harness
(`bench/`, see bench/README.md for the method). This page is generated from
`bench/results/latest.json` by `python bench/report.py bench/results/latest.json --docs
docs/performance.md`; the full tables are in `bench/results/latest.md` and a chart in
`bench/results/latest.png`. Which optimisation applies where, and how to reproduce each
figure: docs/performance-design.md.
"""

DOCS_READING = """## Reading these numbers

- The machine has 2 cores shared with seven other engineers' test runs; the load average
  above says how busy it was. Every figure is a median over interleaved rounds with its
  min–max; differences under ~20 % are noise, and absolute figures (direct included) are
  lower than on a quiet machine. Ratios between targets of the same run are the figures
  to compare.
- Bulk through one tunnel on loopback is bounded by copies: direct costs the kernel one
  copy per byte, a proxy at least two more. proxy64's SOCKS5/CONNECT tunnels move bulk
  with splice(2) after the first 256 KiB; plain HTTP forwarding goes through h11.
- "proxy CPU per connection" includes the kernel work for accept, connect and two sockets
  (~170–190 µs here for every proxy, see docs/performance-design.md); the C proxies are
  near that floor.
- `serve --workers 2` on 2 cores shares them with the load generator and the origin:
  the workers section says, with the arithmetic, whether the proxy or the machine was
  the limit, how evenly SO_REUSEPORT spread the connections and what the workers would
  reach with a core each.
"""


def workers_section(workers_result: dict[str, Any]) -> list[str]:
    """The workers phase of a separate run (bench/results/workers.json), with its header."""
    meta = workers_result["meta"]
    return [
        "## serve --workers: 1 vs 2 workers (separate run)",
        "",
        f"Run {meta['started']} → {meta['finished']}, proxy64 at commit "
        f"{meta.get('commit', 'unknown')}, command `{meta['command'].strip()}`; load average "
        f"{meta['loadavg_start']} at the start, {meta['loadavg_end']} at the end.",
        "",
        *workers_lines(workers_result["extra"]["workers"]),
        "",
    ]


def docs(result: dict[str, Any], workers_result: dict[str, Any] | None = None) -> str:
    meta = result["meta"]
    machine = [
        "## The run",
        "",
        f"- When: {meta['started']} → {meta['finished']} ({meta['duration_s']:.0f} s), "
        f"proxy64 at commit {meta.get('commit', 'unknown')}",
        f"- Machine: {meta['nproc']} CPUs ({meta['cpu_model']}), Linux {meta['kernel']}, "
        f"Python {meta['python']}, hard fd limit {meta.get('fd_limit_hard', '?'):,}",
        f"- Load average (1/5/15 min): {meta['loadavg_start']} at the start, "
        f"{meta['loadavg_end']} at the end",
        f"- Sizes: {meta['rounds']} connection rounds ({meta['conns_c1']:,} connections at 1 "
        f"in flight, {meta['conns_c64']:,} at 64), {meta.get('bulk_rounds', '?')} bulk rounds "
        f"of {meta['bulk_size'] / 2**20:,.0f} MiB per figure",
        "- Reproduce: `.venv/bin/python bench/run.py` (then `bench/chart.py`); "
        "`--quick` for a 20-second smoke run",
        "",
        "## Headline (medians; ratios vs direct in the same run)",
        "",
        *headline(result),
        "",
        "Proxy CPU µs/conn: the proxy's process tree CPU from /proc over the 64-in-flight "
        "run ÷ connections; TTFB: connect() → first response byte in the load generator at "
        "1 in flight (details under the cost table below).",
        "",
    ]
    body = markdown(result).split("\n", 1)[1]  # drop the results page's title
    body = body.replace("\n## ", "\n### ")
    extra = workers_section(workers_result) if workers_result else []
    return "\n".join([DOCS_INTRO, *machine, DOCS_READING, *extra, "## All figures", body])


def main(argv: list[str] | None = None) -> int:
    """Re-render a results JSON as markdown, or as docs/performance.md with --docs."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("json", type=Path, help="bench/results/latest.json")
    parser.add_argument("--docs", type=Path, help="write the user-facing performance page here")
    parser.add_argument(
        "--workers-json",
        type=Path,
        help="with --docs: a separate workers-phase run to include (default: workers.json "
        "beside JSON, when JSON has no workers phase of its own)",
    )
    args = parser.parse_args(argv)
    result = json.loads(args.json.read_text())
    out = args.docs or args.json.with_suffix(".md")
    workers_path = args.workers_json or args.json.with_name("workers.json")
    workers_result = None
    if args.docs and not result.get("extra", {}).get("workers") and workers_path.exists():
        workers_result = json.loads(workers_path.read_text())
    out.write_text(docs(result, workers_result) if args.docs else markdown(result))
    print(out)
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
