"""The repository holds sources, tests, docs and test data only, laid out so that a part
can move without breaking another.

`.gitignore` is a promise: a tracked path that it names (a virtualenv, caches, profile dumps)
is generated on some machine and does not belong in a clone.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from tests.helpers.requirements import require_tool

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> list[str]:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    )
    return [line for line in done.stdout.splitlines() if line]


def _require_checkout() -> None:
    require_tool("git")
    if not (ROOT / ".git").exists():
        # An sdist or an unpacked tarball has no index to check.
        pytest.skip(f"{ROOT} is not a git checkout: no index to check")


def test_no_tracked_path_is_ignored() -> None:
    _require_checkout()
    tracked_but_ignored = _git("ls-files", "--cached", "--ignored", "--exclude-standard")
    assert tracked_but_ignored == [], (
        f"{len(tracked_but_ignored)} tracked path(s) match .gitignore, first: "
        f"{tracked_but_ignored[:5]}; untrack them with git rm -r --cached"
    )


def test_no_virtualenv_or_bytecode_is_tracked() -> None:
    _require_checkout()
    tracked = _git("ls-files")
    generated = [
        p
        for p in tracked
        if p.startswith((".venv/", "venv/"))
        or "/__pycache__/" in p
        or p.endswith((".pyc", ".prof"))
    ]
    assert generated == [], f"generated files are tracked: {generated[:5]}"


def test_test_modules_share_helpers_only_through_tests_helpers() -> None:
    """A helper two test modules need lives in tests/helpers/ (or a package's own harness
    module), so moving or deleting one test module never breaks another."""
    importing = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.startswith("tests.") and name.rpartition(".")[2].startswith("test_"):
                    importing.append(f"{path.relative_to(ROOT)} imports {name}")
    assert importing == []
