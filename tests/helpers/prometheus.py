"""A real Prometheus server for tests: loopback only, generated config, temp storage.

    with running_prometheus(["127.0.0.1:9464"]) as prom:
        prom.wait_for("sum(proxy64_connections_total)", lambda v: v == 3)

Started with Debian's `prometheus` binary, scraping the given targets every second;
stopped by PID (SIGTERM, then SIGKILL) and its storage removed, even when the test fails.
Queries go through its HTTP API (/api/v1/query).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.dnsservers import free_port
from tests.helpers.requirements import tool_path

SCRAPE_INTERVAL = "1s"
START_TIMEOUT = 60.0


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's vector as {sorted label pairs: value}."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(address, timeout=10) as response:
            data = json.load(response)
        assert data["status"] == "success", data
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for item in data["data"]["result"]:
            labels = tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__"))
            out[labels] = float(item["value"][1])
        return out

    def value(self, expression: str) -> float | None:
        """The single value of a query that yields one series (None: no series yet)."""
        result = self.query(expression)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def wait_for(
        self, expression: str, check: Callable[[float | None], bool], timeout: float = 30.0
    ) -> float | None:
        """Poll until check(value) holds; AssertionError with the last value if it never does."""
        deadline = time.monotonic() + timeout
        value = self.value(expression)
        while not check(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} = {value} after {timeout} s\n{self.targets()}")
            time.sleep(0.5)
            value = self.value(expression)
        return value

    def targets(self) -> str:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
            body: bytes = response.read()  # urlopen's answer is typed Any
        return body.decode()


def _config(targets: Sequence[str], basic_auth: tuple[str, str] | None) -> str:
    lines = [
        "global:",
        f"  scrape_interval: {SCRAPE_INTERVAL}",
        f"  scrape_timeout: {SCRAPE_INTERVAL}",
        "scrape_configs:",
        "  - job_name: proxy64",
        "    static_configs:",
        f"      - targets: {json.dumps(list(targets))}",
    ]
    if basic_auth is not None:
        lines += [
            "    basic_auth:",
            f"      username: {json.dumps(basic_auth[0])}",
            f"      password: {json.dumps(basic_auth[1])}",
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def running_prometheus(
    targets: Sequence[str], *, basic_auth: tuple[str, str] | None = None
) -> Iterator[Prometheus]:
    binary = tool_path("prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="proxy64-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(_config(targets, basic_auth), encoding="utf-8")
    port = free_port("127.0.0.1")
    log = workdir / "prometheus.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            cwd=workdir,
        )
    prom = Prometheus(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield prom
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
