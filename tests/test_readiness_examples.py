"""examples/ci: the GitHub Actions and GitLab CI jobs run proxy64 with options this
proxy64 accepts (parsed by its own argument parser), gate on a level, and keep every
report they write (uploaded as artifacts; JUnit handed to GitLab)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy64.cli import build_parser
from proxy64.readiness import Level

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ci"


def proxy64_commands(script: str, variables: dict[str, str]) -> list[list[str]]:
    """Every proxy64 invocation in a shell script, variables substituted, `sudo … "$(command
    -v proxy64)"` reduced to the arguments."""
    text = script.replace("\\\n", " ")
    for name, value in variables.items():
        text = text.replace(f'"${name}"', value).replace(f"${name}", value)
    found = []
    for line in text.splitlines():
        match = re.search(r'(?:^|\s)(?:proxy64|"\$\(command -v proxy64\)")\s+(run|tun)\s', line)
        if match:
            found.append(shlex.split(line[match.start(1) :]))
    return found


def check(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # the relative --report paths are checked for writability
    args = build_parser().parse_args(argv)
    assert args.require is not None, f"{argv}: no --require, the job cannot fail on a regression"
    assert args.report, f"{argv}: no --report"
    command = list(args.cmd)
    assert command[:1] == ["--"] and len(command) > 1
    return args


def test_github_actions_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    variables = workflow["env"]
    assert Level(variables["REQUIRE"])
    steps = workflow["jobs"]["readiness"]["steps"]
    commands = [c for s in steps for c in proxy64_commands(s.get("run", ""), variables)]
    assert [c[:2] for c in commands] == [["run", "--egress"], ["tun", "run"]]
    reports: set[str] = set()
    for argv in commands:
        args = check(argv, tmp_path, monkeypatch)
        reports |= {str(p) for p in args.report}
    assert {Path(r).suffix for r in reports} == {".json", ".md", ".xml"}
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "readiness-*" and all(
        r.startswith("readiness-") for r in reports
    )
    assert upload["if"] == "success() || failure()"  # the reports of a failed gate matter most
    summary = next(s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert "readiness-*.md" in summary["run"]


def test_gitlab_ci_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    variables = config["variables"]
    assert Level(variables["REQUIRE"])
    job = config["ipv6-readiness"]
    commands = [c for line in job["script"] for c in proxy64_commands(line, variables)]
    assert [c[0] for c in commands] == ["run", "tun"]
    junit: set[str] = set()
    for argv in commands:
        args = check(argv, tmp_path, monkeypatch)
        junit |= {str(p) for p in args.report if p.suffix == ".xml"}
    assert set(job["artifacts"]["reports"]["junit"]) == junit
    assert job["artifacts"]["when"] == "always"
