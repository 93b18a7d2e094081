"""What the compose demo test builds before `docker-compose up`: a local base image and an
offline build context, because the test cannot pull from Docker Hub nor run pip against
PyPI inside a container.

- Base image: `debootstrap --variant=minbase` of Debian 12 with python3 and pip, from the
  Debian mirror the host's apt uses, `docker import`ed. Like python:3.12-slim-bookworm it
  lets pip install into the system (no EXTERNALLY-MANAGED marker). The root file system
  tarball is cached between runs; without the cache it is built from nothing.
- Build context: the repository's files (as git lists them) plus a wheelhouse made on the
  host with `pip wheel`, which the Dockerfile's WHEELHOUSE argument installs from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.compose.docker_host import Docker
from tests.helpers.requirements import tool_path

SUITE = "bookworm"  # Debian 12: python3.11, what proxy64 requires at least
INCLUDE = ("python3", "python3-pip")
WHEELHOUSE = "wheelhouse"  # relative to the build context, as the Dockerfile expects
BUILD_BACKEND = "setuptools"  # pyproject.toml's [build-system]: pip needs its wheel too


def _one_line_sources(text: str) -> list[tuple[list[str], list[str], list[str], list[str]]]:
    """`deb [options] URI SUITE COMPONENT...` lines as (types, uris, suites, components)."""
    found = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 4:
            found.append(([words[0]], [words[1]], [words[2]], words[3:]))
    return found


def _deb822_sources(text: str) -> list[tuple[list[str], list[str], list[str], list[str]]]:
    """Stanzas of a .sources file (sources.list(5), DEB822-STYLE FORMAT)."""
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if fields.get("enabled", ["yes"]) == ["no"]:
            continue
        parts = [fields.get(k, []) for k in ("types", "uris", "suites", "components")]
        found.append((parts[0], parts[1], parts[2], parts[3]))
    return found


def debian_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str | None:
    """The first http(s) mirror apt here uses for `deb ... SUITE main`, or None."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            entries = _deb822_sources(text)
        elif path.suffix == ".list" or path.name == "sources.list":
            entries = _one_line_sources(text)
        else:
            continue
        for types, uris, suites, components in entries:
            if "deb" in types and suite in suites and "main" in components:
                for uri in uris:
                    if uri.startswith(("http://", "https://")):
                        return uri
    return None


def base_image(docker: Docker, cache_dir: Path, workdir: Path, tag: str, mirror: str) -> None:
    """Import the minbase Debian tree as `tag`, debootstrapping it unless it is cached."""
    tarball = cache_dir / f"{SUITE}-minbase-{'-'.join(INCLUDE)}.tar"
    if not tarball.exists():
        rootfs = workdir / "rootfs"
        result = subprocess.run(
            [
                tool_path("debootstrap"), "--variant=minbase", f"--include={','.join(INCLUDE)}",
                SUITE, str(rootfs), mirror,
            ],
            capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}"
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()  # pip installs into the system, as on the python images
        for deb in rootfs.glob("var/cache/apt/archives/*.deb"):
            deb.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        partial.rename(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    result = docker.run("import", str(tarball), tag, timeout=600)
    assert result.returncode == 0, f"docker import failed: {result.stderr}"


def build_context(repo: Path, dest: Path) -> None:
    """The repository's files (tracked or new, not ignored) and a wheelhouse, in dest."""
    listed = subprocess.run(
        [tool_path("git"), "-C", str(repo), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"],
        capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = repo / name
        if source.is_file():  # a tracked file deleted in the work tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest / WHEELHOUSE),
         str(dest), BUILD_BACKEND],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, f"pip wheel failed:\n{result.stderr[-3000:]}"
