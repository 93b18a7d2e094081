"""Skip a test that needs root or a tool, with the reason; under CI=true, fail instead.

CI runs as root with every tool installed by scripts/bootstrap --test, so a missing tool
there is a broken set-up that must not turn green by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: scripts/bootstrap --test should have provided it")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("needs root (network namespaces, TUN devices)")


def _find(name: str) -> str | None:
    for directory in ("/usr/sbin", "/sbin"):
        if os.path.exists(f"{directory}/{name}"):
            return f"{directory}/{name}"
    return shutil.which(name)


def require_tool(*names: str) -> None:
    for name in names:
        if _find(name) is None:
            _missing(f"needs the {name!r} program (see scripts/apt-packages.txt)")


def tool_path(name: str) -> str:
    found = _find(name)
    if found is None:
        _missing(f"needs the {name!r} program (see scripts/apt-packages.txt)")
        raise AssertionError("unreachable")
    return found


def require_module(name: str, why: str) -> None:
    """Import-check a Python package from an extra (scripts/bootstrap --test installs it)."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        _missing(f"needs the Python package {name!r} ({why})")
