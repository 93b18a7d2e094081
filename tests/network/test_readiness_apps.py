"""The readiness verdicts and the --require gate on apps nobody here wrote, each with a known
answer, in the NAT64 test network (tayga, NSD, an IPv4-only origin, a native IPv6 origin):

- curl to a name with AAAA: native-ipv6; to an A-only name: nat64; to an IPv4 literal:
  clat; to a name that does not exist: failed (curl's own status still reported);
- git clone over HTTP (dumb protocol, served from the IPv4-only origin) through `run`;
- `tun run`: curl by name passes no-clat, python3's AF_INET socket to a literal breaks it.

Each gate level passes and fails on the right app with proxy64's exit status 120 and the
destinations that broke it on stderr; the report files validate (JSON schema, JUnit XSD).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy64.defaults import EXIT_NOT_READY
from tests.helpers.report_formats import validate_json, validate_junit
from tests.helpers.requirements import require_tool, tool_path
from tests.network import topology as T
from tests.network.clients import NSD
from tests.network.netlab import Netlab
from tests.network.proxy import run_proxy64_in

pytestmark = pytest.mark.network

WKP_ARGS = ("--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX), "--egress", "nat64")
GIT_PORT = 8081


def run_under(
    netlab: Netlab, level: str | None, *cmd: str, reports: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    gate = ("--require", level) if level else ()
    files = [arg for path in reports for arg in ("--report", str(path))]
    return run_proxy64_in(netlab, "run", *WKP_ARGS, *gate, *files, "--", *cmd)


def reason_lines(stderr: str) -> dict[str, tuple[str, str]]:
    """'  DEST: VERDICT: REASON' lines of the table → {DEST: (VERDICT, REASON)}."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("  ") and not line.startswith("  breaks it") and ": " in line:
            dest, verdict, reason = line.strip().split(": ", 2)
            found[dest] = (verdict, reason)
    return found


def broken(stderr: str) -> list[str]:
    return [
        line.split(": ", 2)[1] for line in stderr.splitlines() if line.startswith("  breaks it: ")
    ]


def curl(url: str) -> tuple[str, ...]:
    return (tool_path("curl"), "-sS", "--max-time", "8", url)


LITERAL = f"{T.ORIGIN4}:80"
V4ONLY = f"{T.V4ONLY}:80"
DUAL = f"{T.DUAL}:80"


@pytest.mark.parametrize(
    ("url", "dest", "verdict", "passes"),
    [
        (f"http://{T.DUAL}/", DUAL, "native-ipv6", {"reachable", "no-clat", "native"}),
        (f"http://{T.V4ONLY}/", V4ONLY, "nat64", {"reachable", "no-clat"}),
        (f"http://{T.ORIGIN4}/", LITERAL, "clat", {"reachable"}),
    ],
)
def test_curl_verdicts_and_every_gate_level(
    netlab: Netlab, url: str, dest: str, verdict: str, passes: set[str]
) -> None:
    require_tool("curl")
    for level in ("reachable", "no-clat", "native"):
        done = run_under(netlab, level, *curl(url))
        assert reason_lines(done.stderr)[dest][0] == verdict, done.stderr
        assert "exited with status 0" in done.stderr  # curl itself succeeded every time
        if level in passes:
            assert done.returncode == 0, done.stderr
            assert f"--require {level}: passed" in done.stderr
        else:
            assert done.returncode == EXIT_NOT_READY, done.stderr
            assert f"--require {level}: FAILED by 1 destination" in done.stderr
            assert broken(done.stderr) == [dest]


def test_without_require_the_exit_status_is_the_apps(netlab: Netlab) -> None:
    require_tool("curl")
    done = run_under(netlab, None, *curl(f"http://{T.ORIGIN4}/"))
    assert done.returncode == 0 and "--require" not in done.stderr
    assert reason_lines(done.stderr)[LITERAL] == (
        "clat",
        "an IPv4 literal given to the proxy: no DNS64 can help; works only with a CLAT (464XLAT)",
    )


def test_failed_destination_breaks_reachable_and_the_apps_status_is_kept(
    netlab: Netlab, tmp_path: Path
) -> None:
    require_tool("curl")
    report = tmp_path / "r.json"
    done = run_under(
        netlab, "reachable", tool_path("curl"), "-fsS", "--max-time", "8",
        f"http://{T.V4ONLY}/", f"http://{T.MISSING}/", reports=(report,),
    )  # fmt: skip
    assert done.returncode == EXIT_NOT_READY, done.stderr
    assert broken(done.stderr) == [f"{T.MISSING}:80"]
    verdict, reason = reason_lines(done.stderr)[f"{T.MISSING}:80"]
    assert verdict == "failed" and "NXDOMAIN" in reason
    data = json.loads(report.read_text())
    validate_json(data)
    assert data["status"] == 22  # curl -f: the proxy's 502 for the missing name, last URL
    assert data["gate"] == {"level": "reachable", "passed": False, "broken": [f"{T.MISSING}:80"]}
    assert "exited with status 22" in done.stderr


@pytest.fixture
def git_origin(netlab: Netlab) -> Iterator[str]:
    """A bare repository served over dumb HTTP by python3's http.server on the IPv4-only
    origin (git's dumb protocol: `git update-server-info` writes the index it reads)."""
    require_tool("git")
    root = netlab.workdir / "git-origin"
    shutil.rmtree(root, ignore_errors=True)
    work = root / "work"
    work.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(work)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("cloned through proxy64 and tayga\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")],
                   check=True)  # fmt: skip
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True)
    name = "git-http"
    netlab.spawn(
        name,
        netlab.origin,
        [sys.executable, "-m", "http.server", str(GIT_PORT), "--bind", str(T.ORIGIN4),
         "--directory", str(root)],
    )  # fmt: skip
    netlab.wait_until(
        name, lambda: netlab.tcp_open(netlab.origin, str(T.ORIGIN4), GIT_PORT), "git HTTP"
    )
    yield f"http://{T.V4ONLY}:{GIT_PORT}/repo.git"
    netlab.stop(name)


def test_git_clone_through_run_is_nat64_only(
    netlab: Netlab, git_origin: str, tmp_path: Path
) -> None:
    target = tmp_path / "clone"
    reports = (tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.xml")
    git = (tool_path("git"), "-c", "http.lowSpeedTime=8", "clone", "-q", git_origin, str(target))
    done = run_under(netlab, "no-clat", *git, reports=reports)
    assert done.returncode == 0, done.stderr
    assert (target / "README").read_text() == "cloned through proxy64 and tayga\n"
    dest = f"{T.V4ONLY}:{GIT_PORT}"
    verdict, reason = reason_lines(done.stderr)[dest]
    assert verdict == "nat64" and reason.startswith("no AAAA record")
    data = json.loads(reports[0].read_text())
    validate_json(data)
    assert data["gate"]["passed"] and data["destinations"][0]["verdict"] == "nat64"
    assert "## proxy64 IPv6-only readiness: passed `--require no-clat`" in reports[1].read_text()
    root = validate_junit(reports[2].read_text())
    assert root.find("./testsuite").get("failures") == "0"  # type: ignore[union-attr]
    shutil.rmtree(target)
    native = run_under(netlab, "native", *git, reports=reports)
    assert native.returncode == EXIT_NOT_READY, native.stderr
    assert broken(native.stderr) == [dest]
    junit = validate_junit(reports[2].read_text())
    (failure,) = junit.findall("./testsuite/testcase/failure")
    assert failure.get("type") == "nat64"


AF_INET_APP = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET)\n"
    "s.settimeout(5)\n"
    "try: s.connect(('{addr}', 80)); print('connected')\n"
    "except OSError as e: print(e.strerror)\n"
)


def test_tun_run_gate_on_hidden_ipv4(netlab: Netlab, tmp_path: Path) -> None:
    """curl by name inside tun run is nat64 (passes no-clat); python3 opening an AF_INET
    socket to the origin's literal is hidden IPv4 (clat, never reached: breaks even
    reachable, since the sandbox answers it as an IPv6-only network would)."""
    require_tool("curl")
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    tun = ("tun", "run", *WKP_ARGS)
    by_name = run_proxy64_in(
        netlab, *tun, "--require", "no-clat", "--", *curl(f"http://{T.V4ONLY}/")
    )
    assert by_name.returncode == 0, by_name.stderr
    rows = reason_lines(by_name.stderr)
    assert rows[V4ONLY][0] == "nat64"
    if LITERAL in rows:  # curl raced the A record too (RFC 8305): the name's verdict
        assert rows[LITERAL][0] == "nat64" and "went on over IPv6" in rows[LITERAL][1]
    report = tmp_path / "tun.json"
    script = AF_INET_APP.format(addr=T.ORIGIN4)
    hidden = run_proxy64_in(
        netlab, *tun, "--require", "reachable", "--report", str(report),
        "--", sys.executable, "-c", script,
    )  # fmt: skip
    assert hidden.returncode == EXIT_NOT_READY, hidden.stderr
    assert hidden.stdout.strip() == "Network is unreachable"  # at once, as IPv6-only
    assert broken(hidden.stderr) == [LITERAL]
    verdict, reason = reason_lines(hidden.stderr)[LITERAL]
    assert verdict == "clat"
    assert reason.startswith(
        "an AF_INET TCP socket inside tun run to a literal (1 attempt), answered"
    )
    data = json.loads(report.read_text())
    validate_json(data)
    assert data["mode"] == "tun run" and data["status"] == 0
    (row,) = data["destinations"]
    assert row["front_ends"] == ["tun-tcp"] and not row["reached_here"]
    translated = run_proxy64_in(
        netlab, *tun, "--ipv4", "--require", "reachable", "--", sys.executable, "-c", script
    )
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout.strip() == "connected"
    assert "translated by --ipv4" in reason_lines(translated.stderr)[LITERAL][1]
