"""PREF64 as systemd-networkd learned it: `networkctl --json=short status`.

No networkd runs on the test machines, so besides the real networkctl (when installed:
it fails to reach networkd, and that is reported), a stand-in program prints what
networkd 253+ prints for a link with a PREF64 (NDisc.PREF64: the prefix as 16 octets,
LifetimeUSec the end of validity in CLOCK_BOOTTIME microseconds).
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from proxy64.net.nat64_watch import Nat64Sources
from proxy64.net.pref64_listener import networkd_status
from proxy64.proto.rfc6052 import Nat64Prefix

PREFIX = Nat64Prefix.parse("2001:db8:64::/96")


def networkctl_printing(tmp_path: Path, output: str, status: int = 0) -> str:
    script = tmp_path / "networkctl"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def status_with_pref64(seconds_left: float) -> str:
    until = int((time.clock_gettime(time.CLOCK_BOOTTIME) + seconds_left) * 1e6)
    link = {
        "Name": "eth1",
        "NDisc": {
            "PREF64": [
                {
                    "Prefix": list(PREFIX.network.network_address.packed),
                    "PrefixLength": 96,
                    "LifetimeUSec": until,
                }
            ]
        },
    }
    return json.dumps({"Interfaces": [{"Name": "lo"}, link]})


async def test_networkd_pref64_is_read_with_its_lifetime(tmp_path: Path) -> None:
    result = await networkd_status(networkctl_printing(tmp_path, status_with_pref64(600)))
    assert result.problem is None
    [(name, pref64)] = result.found
    assert (name, pref64.prefix) == ("eth1", PREFIX) and 595 <= pref64.lifetime <= 600


async def test_rfc9872_networkd_comes_after_ras_and_before_rfc7050(tmp_path: Path) -> None:
    async def rfc7050(servers: object) -> tuple[list[Nat64Prefix], int | None]:
        raise AssertionError("RFC 7050 asked although networkd had a PREF64")

    command = networkctl_printing(tmp_path, status_with_pref64(600))
    sources = Nat64Sources((), rfc7050=rfc7050, open_ra_socket=None, networkctl=command)
    choice = await sources.choose()
    assert (choice.prefix, choice.why) == (PREFIX, "PREF64 from systemd-networkd on eth1")
    assert sources.reports()[1].prefixes == (PREFIX,)


async def test_networkctl_failures_are_reported(tmp_path: Path) -> None:
    missing = await networkd_status(str(tmp_path / "absent"))
    assert missing.problem == f"{tmp_path / 'absent'} not found" and not missing.found
    failing = networkctl_printing(tmp_path, "Failed to connect to bus", status=1)
    assert (await networkd_status(failing)).problem == (
        f"{failing}: exit status 1"  # the message went to stdout, stderr is empty
    )
    garbage = networkctl_printing(tmp_path, "not json")
    problem = (await networkd_status(garbage)).problem
    assert problem is not None and problem.startswith(f"{garbage} printed no JSON")


def networkd_answers(command: str) -> bool:
    done = subprocess.run([command, "--json=short", "status"], capture_output=True, check=False)
    return done.returncode == 0


async def test_the_real_networkctl_without_networkd() -> None:
    command = shutil.which("networkctl")
    if command is None:
        pytest.skip("networkctl is not installed (systemd): the absent case is tested above")
    if networkd_answers(command):
        pytest.skip("systemd-networkd answers here: its PREF64 is this host's, not a test's")
    result = await networkd_status()
    assert result.found == () and result.problem is not None
    assert result.problem.startswith("networkctl: ")
