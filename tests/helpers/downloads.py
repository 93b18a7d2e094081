"""A long download through the proxy that something must not cut (a reload, a rule
change): 256 MiB of the aiohttp origin's pattern as user alice, slowed to about 4 s, then
checked byte for byte (sha256)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.helpers.aiohttp_origin import Origin, pattern_bytes
from tests.helpers.proxy_process import ProxyProcess, socks_url_as
from tests.helpers.requirements import require_tool, tool_path

SIZE = 256 * 1024 * 1024
SEED = 13


def expected_digest() -> str:
    return hashlib.sha256(pattern_bytes(SIZE, SEED)).hexdigest()


def start_download(proxy: ProxyProcess, origin: Origin, target: Path) -> subprocess.Popen[bytes]:
    """A 256 MiB download as alice, slowed to about 4 s so SIGHUPs land in the middle."""
    require_tool("curl")
    return subprocess.Popen(
        [tool_path("curl"), "-sS", "-f", "--noproxy", "", "--limit-rate", "64M",
         "-x", socks_url_as(proxy, "alice", "one"), "-o", str(target),
         origin.url4(f"/bytes/{SIZE}?seed={SEED}")],
        stderr=subprocess.PIPE,
    )  # fmt: skip


def finish_download(download: subprocess.Popen[bytes], target: Path) -> None:
    _, err = download.communicate(timeout=60)
    assert download.returncode == 0, err
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest == expected_digest()
