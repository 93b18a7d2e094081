"""The bench's workers phase: the arithmetic of its summary (pure) and one quick run of
`bench/run.py --tests workers` end to end (1 and 2 workers, per-worker CPU and
connections, the load processes' and the origin's CPU). Smoke values, not measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from tests.helpers.requirements import IN_CI, require_module

REPO = Path(__file__).resolve().parents[2]


def sample(conn_s: float, workers: list[float], conns: list[int], **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "conn_s": conn_s,
        "errors": 0,
        "worker_cpu_pct": workers,
        "worker_conns": conns,
        "proxy_cpu_pct": sum(workers),
        "loadgen_cpu_pct": [20.0, 20.0],
        "origin_cpu_pct": 30.0,
        "machine_busy_pct": 195.0,
        "proxy_us_per_conn": 500.0,
        "loadgen_us_per_conn": 160.0,
        "origin_us_per_conn": 150.0,
        "proxy_switches_per_conn": 3.0,
        "loadgen_switches_per_conn": 1.5,
        "loadavg": 2.0,
    }
    return base | kw


def test_summary_states_the_machine_bound_with_its_arithmetic() -> None:
    samples = {
        "1": [sample(2000, [100.0], [4100]), sample(1800, [90.0], [4100])],
        "2": [
            sample(2400, [60.0, 60.0], [2060, 2040]),
            sample(2200, [55.0, 50.0], [2100, 2000]),
        ],
    }
    w = report.workers_summary(samples, 2)
    one, two = w["by_workers"]["1"], w["by_workers"]["2"]
    assert one["conn_s"]["median"] == 1900 and two["conn_s"]["median"] == 2300
    assert w["ratio_conn_s"] == pytest.approx(2300 / 1900)
    assert two["worker_cpu_pct"] == [57.5, 55.0]  # busiest first, median per position
    assert two["busiest_conn_share"]["median"] == pytest.approx((2060 / 4100 + 2100 / 4100) / 2)
    # capacity: conn/s / busiest worker's core share: 1 worker 2000/1.0 and 1800/0.9 = 2000
    assert one["capacity_conn_s"]["median"] == pytest.approx(2000)
    assert two["capacity_conn_s"]["median"] == pytest.approx((2400 / 0.6 + 2200 / 0.55) / 2)
    bound = w["bound"]
    # other work = machine busy − proxy − load processes − origin: 195 − 120 (105) − 40 − 30
    # = 5 (20) % with 2 workers, 195 − 100 (90) − 70 = 25 (35) % with 1 worker
    assert two["other_cpu_pct"]["median"] == pytest.approx(12.5)
    assert one["other_cpu_pct"]["median"] == pytest.approx(30)
    # 500 µs proxy + 310 µs load generator and origin per connection, on the 1.875 cores
    # other work left: at most 1.875e6 / 810 conn/s; one worker: one core, 1e6 / 500
    assert bound["cores_left"] == pytest.approx(1.875)
    assert bound["two_workers_conn_s"] == pytest.approx(1.875e6 / 810)
    assert bound["one_worker_conn_s"] == pytest.approx(1e6 / 500)
    assert bound["best_ratio"] == pytest.approx(1.875e6 / 810 / 2000)
    assert bound["quiet_best_ratio"] == pytest.approx(2e6 / 810 / 2000)
    # with the 1-worker costs (here the same): 2e6 / 810 against 1e6 / 500
    assert bound["ideal_ratio"] == pytest.approx(2e6 / 810 / 2000)
    assert two["proxy_switches_per_conn"]["median"] == 3.0
    assert w["machine_limited"] is True
    text = "\n".join(report.workers_lines(w))
    assert "at most 1.88 × 10⁶ / (500 + 310) = 2,315 conn/s, against 2,000" in text
    assert "1.16× (1.23× with all 2 cores free for this test)" in text
    assert "would allow 1.23× one worker" in text
    assert "| 3.0 / 1.5 |" in text
    assert "the machine, not the proxy, bounded the scaling" in text
    goals = {g.name: g for g in report.workers_goals({"workers": w})}
    assert [g.met for g in goals.values()] == [True, True, True]


def test_summary_without_two_worker_rounds_has_no_ratio() -> None:
    w = report.workers_summary({"1": [sample(2000, [100.0], [10])], "2": []}, 2)
    assert "ratio_conn_s" not in w and "bound" not in w
    goals = report.workers_goals({"workers": w})
    assert len(goals) == 1 and goals[0].met is None


def test_quick_workers_phase_end_to_end(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "--quick",
        "--servers",
        "proxy64",
        "--tests",
        "workers",
        "--out-dir",
        str(tmp_path),
    ]
    if IN_CI:
        argv += ["--require", "proxy64"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    if "proxy64" in result["extra"]["missing_servers"]:
        assert not IN_CI
        pytest.skip("proxy64 serve is not available in this checkout")
    w = result["extra"]["workers"]
    for workers in ("1", "2"):
        e = w["by_workers"][workers]
        assert e["conn_s"]["median"] > 0
        assert len(e["worker_cpu_pct"]) == int(workers)  # one CPU figure per worker
        assert len(e["worker_conns"]) == int(workers)
        assert all(c > 0 for c in e["worker_conns"])  # SO_REUSEPORT fed every worker
        assert len(e["loadgen_cpu_pct"]) == 2  # two load processes
        assert e["proxy_us_per_conn"]["median"] > 0
        assert e["proxy_switches_per_conn"]["median"] > 0  # read from /proc for each worker
        assert e["loadgen_switches_per_conn"]["median"] > 0
    # every measured connection was accepted by one of the workers (the warm-up and the
    # start-up probes usually add ~102 more, but the warm-up's result is not checked)
    for sample in w["samples"]["2"]:
        assert sample["errors"] == 0 and sample["done"] == 300
        assert sum(sample["worker_conns"]) >= sample["done"]
    assert "ratio_conn_s" in w and w["bound"]["best_ratio"] > 0
    assert "## serve --workers: 1 vs 2 workers, interleaved" in proc.stdout
    assert "the best ratio this box could show in this run" in proc.stdout


def test_docs_page_includes_a_separate_workers_run(tmp_path: Path) -> None:
    samples = {"1": [sample(2000, [100.0], [4100])], "2": [sample(2300, [60.0, 55.0], [2, 2])]}
    meta = {
        "started": "S",
        "finished": "F",
        "commit": "abc1234",
        "command": "python bench/run.py --tests workers",
        "loadavg_start": "1.00 1.00 1.00",
        "loadavg_end": "2.00 2.00 2.00",
    }
    workers_result = {"meta": meta, "extra": {"workers": report.workers_summary(samples, 2)}}
    lines = report.workers_section(workers_result)
    text = "\n".join(lines)
    assert lines[0] == "## serve --workers: 1 vs 2 workers (separate run)"
    assert "proxy64 at commit abc1234" in text and "| 2 | 2,300 (2,300–2,300) |" in text


def test_chart_of_a_workers_only_run(tmp_path: Path) -> None:
    require_module("matplotlib", "the chart needs the `bench` extra")
    from bench import chart

    samples = {"1": [sample(2000, [100.0], [4100])], "2": [sample(2300, [60.0, 55.0], [2, 2])]}
    result = {
        "meta": {"started": "S", "nproc": 2, "loadavg_start": "1 1 1", "mode": "full"},
        "labels": ["direct"],
        "summary": {},
        "extra": {"workers": report.workers_summary(samples, 2)},
    }
    out = tmp_path / "w.png"
    chart.draw(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
