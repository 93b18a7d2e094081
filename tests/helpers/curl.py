"""curl as the tests run it: `-sS`, a time limit, found by require_tool, and without the
proxy variables of the test's own environment (every test names its proxy with -x/-p),
so a developer's http_proxy cannot change what a test sees.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping

import trio

from tests.helpers.requirements import require_tool, tool_path


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without *_proxy / *_PROXY variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra)
    return env


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run curl to completion; stdout and stderr as text."""
    require_tool("curl")
    return subprocess.run(
        [tool_path("curl"), "-sS", "--max-time", str(timeout), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout + 10,
        check=False,
    )


def curl_bytes(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    """Run curl to completion; stdout and stderr as bytes (binary bodies)."""
    require_tool("curl")
    return subprocess.run(
        [tool_path("curl"), "-sS", "--max-time", str(timeout), *args],
        capture_output=True,
        env=clean_env(),
        timeout=timeout + 10,
        check=False,
    )


async def curl_async(
    *args: str, env: Mapping[str, str] | None = None, max_time: float = 20
) -> subprocess.CompletedProcess[bytes]:
    """curl from a trio test (the proxy under test runs in the same trio run); bytes.
    `max_time` is curl's --max-time; the test gives up 10 s after it."""
    require_tool("curl")
    with trio.fail_after(max_time + 10):
        return await trio.run_process(
            [tool_path("curl"), "-sS", "--max-time", str(max_time), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=clean_env() if env is None else env,
        )


async def curl_async_text(*args: str, max_time: float = 20) -> tuple[int, str, str]:
    """curl_async() as (exit status, stdout, stderr) text."""
    done = await curl_async(*args, max_time=max_time)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def echo(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """What the aiohttp origin's /echo saw (tests/helpers/aiohttp_origin.py), from a curl
    that must have succeeded."""
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data
