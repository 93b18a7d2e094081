"""`proxy64 run -- CMD`: proxy variables, exit status pass-through, the readiness report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy64.defaults import MAX_CONNECTIONS
from proxy64.fd_limit import serve_need
from tests.helpers.aiohttp_origin import Origin
from tests.helpers.fds import (
    LIMITS_OF_CMD_AND_PARENT,
    SHELL_SOFT,
    cmd_and_parent_limits,
    from_a_shells_limit,
)
from tests.helpers.proxy_process import run_proxy64
from tests.helpers.requirements import require_tool, tool_path

EMBEDDED = ["--egress", "embedded", "--nat64-prefix", "2001:db8:64::/96"]


def test_curl_through_run_and_the_report(origin: Origin, tmp_path: Path) -> None:
    require_tool("curl")
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = run_proxy64(
        [
            "run",
            *EMBEDDED,
            "--report",
            str(report),
            "--",
            tool_path("curl"),
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/stdout",  # curl pairs -o options with the URLs in order
            "-o",
            "/dev/null",
            origin.url4("/echo"),
            origin.url6("/bytes/5000?seed=1"),
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout[: result.stdout.index("}") + 1])["path_qs"] == "/echo"
    # curl used http_proxy: the origin saw proxy64's IPv4 connection, and the report says so
    table = result.stderr[result.stderr.index("proxy64 readiness report") :]
    lines = table.splitlines()
    assert lines[1].split()[:3] == ["DESTINATION", "REACHED", "EGRESS"]
    v4_row = next(line for line in lines if line.startswith(f"127.0.0.1:{origin.port4}"))
    assert v4_row.split()[1:5] == ["ipv4-literal-mapped", "embedded", "1", "0"]
    v6_row = next(line for line in lines if line.startswith(f"[::1]:{origin.port6}"))
    assert v6_row.split()[1:5] == ["native-ipv6", "-", "1", "0"]
    assert "2 destinations, 1 IPv4-only (reached through NAT64), 2 connections, 0 failed" in table
    data = json.loads(report.read_text())
    assert data["summary"]["ipv4_only"] == 1
    by_dest = {d["destination"]: d for d in data["destinations"]}
    v4 = by_dest[f"127.0.0.1:{origin.port4}"]
    assert v4["reached"] == ["ipv4-literal-mapped"] and v4["egress"] == ["embedded"]
    assert v4["ipv4_only"] and v4["bytes_down"] > 0 and v4["bytes_up"] > 0
    v6 = by_dest[f"[::1]:{origin.port6}"]
    assert v6["reached"] == ["native-ipv6"] and v6["bytes_down"] > 5000


def test_proxy_variables_set_and_no_proxy_kept() -> None:
    env = dict(os.environ, NO_PROXY="internal.example,10.0.0.0/8")
    env.pop("no_proxy", None)
    result = run_proxy64(
        [
            "run",
            *EMBEDDED,
            "--",
            "sh",
            "-c",
            'echo "$http_proxy|$https_proxy|$HTTP_PROXY|$HTTPS_PROXY|$ALL_PROXY|$all_proxy|'
            '$NO_PROXY|${no_proxy-unset}"',
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    fields = result.stdout.strip().split("|")
    http = fields[0]
    assert http.startswith("http://127.0.0.1:") and fields[1:4] == [http] * 3
    assert fields[4].startswith("socks5h://127.0.0.1:") and fields[5] == fields[4]
    assert fields[6:] == ["internal.example,10.0.0.0/8", "unset"]
    start = next(ln for ln in result.stderr.splitlines() if ln.startswith("proxy64: SOCKS5"))
    assert f"HTTP {http.removeprefix('http://')};" in start


@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 143), ("kill -KILL $$", 137)],
)
def test_exit_status_is_passed_through(script: str, status: int) -> None:
    result = run_proxy64(["run", *EMBEDDED, "--", "sh", "-c", script])
    assert result.returncode == status, result.stderr
    assert "proxy64 readiness report" in result.stderr


def test_command_not_found_is_127_and_no_command_is_2() -> None:
    result = run_proxy64(["run", *EMBEDDED, "--", "p64-no-such-command"])
    assert result.returncode == 127
    assert "cannot start 'p64-no-such-command'" in result.stderr
    result = run_proxy64(["run", *EMBEDDED])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "CMD" in result.stderr


def test_failed_connection_appears_in_the_report(tmp_path: Path) -> None:
    require_tool("curl")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    report = tmp_path / "r.json"
    result = run_proxy64(
        [
            "run",
            *EMBEDDED,
            "--report",
            str(report),
            "--",
            tool_path("curl"),
            "-fsS",
            "--max-time",
            "10",
            f"http://127.0.0.1:{port}/",
        ],
    )
    assert result.returncode == 22  # curl -f: the proxy answered 502
    data = json.loads(report.read_text())
    entry = data["destinations"][0]
    assert entry["destination"] == f"127.0.0.1:{port}"
    assert entry["failures"] == 1 and "refused" in entry["last_failure"]


def test_run_with_auth_gives_the_command_credentials(origin: Origin) -> None:
    require_tool("curl")
    env = dict(os.environ, PROXY64_AUTH="runner:pw-123")
    result = run_proxy64(
        [
            "run",
            *EMBEDDED,
            "--",
            tool_path("curl"),
            "-fsS",
            "--max-time",
            "10",
            origin.url4("/echo"),
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path_qs"] == "/echo"
    assert "pw-123" not in result.stderr


def test_run_refuses_workers() -> None:
    result = run_proxy64(["run", *EMBEDDED, "--workers", "2", "--", "true"])
    assert result.returncode == 2 and "--workers" in result.stderr


def test_run_raises_the_proxys_open_files_limit_and_not_the_commands() -> None:
    """Started from a shell's 1024 open files: the proxy raises its soft limit for
    --max-connections (within the hard limit) after CMD's fork; CMD keeps 1024."""
    prlimit, expected = from_a_shells_limit(serve_need(MAX_CONNECTIONS).wanted)
    done = subprocess.run(
        [*prlimit, sys.executable, "-m", "proxy64", "run", *EMBEDDED, "--",
         *LIMITS_OF_CMD_AND_PARENT],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert cmd_and_parent_limits(done.stdout) == (SHELL_SOFT, expected)
