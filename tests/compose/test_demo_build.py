"""debian_mirror: the mirror debootstrap uses, read from apt's sources (sources.list(5):
one-line and deb822 formats)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.compose.demo_build import debian_mirror


def apt_dir(tmp: Path, files: dict[str, str]) -> Path:
    (tmp / "sources.list.d").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp / name).write_text(text)
    return tmp


DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sources.list.d/debian.sources": DEB822}, "http://mirror.example/debian"),
        (
            {"sources.list": "deb [arch=amd64] http://m.example/debian bookworm main contrib\n"},
            "http://m.example/debian",
        ),
        (  # a deb-src line, another suite, a component other than main, a comment: none fits
            {
                "sources.list": "deb-src http://a.example/debian bookworm main\n"
                "deb http://b.example/debian trixie main\n"
                "deb http://c.example/debian bookworm contrib\n"
                "# deb http://d.example/debian bookworm main\n"
            },
            None,
        ),
        (  # Enabled: no skips the stanza; the .list file after it is read
            {
                "sources.list.d/a.sources": "Enabled: no\n" + DEB822,
                "sources.list.d/b.list": "deb https://e.example/debian bookworm main\n",
            },
            "https://e.example/debian",
        ),
        (  # only http(s): debootstrap here does not read file: or cdrom: sources
            {"sources.list": "deb file:/srv/debian bookworm main\n"},
            None,
        ),
        ({"sources.list.d/x.disabled": "deb http://f.example/debian bookworm main\n"}, None),
    ],
)
def test_debian_mirror(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    assert debian_mirror(apt_dir(tmp_path, files)) == expected


@given(st.text(), st.sampled_from(["sources.list", "sources.list.d/x.sources"]))
def test_debian_mirror_reads_any_text(text: str, name: str) -> None:
    """Garbage in apt's files gives None or a mirror named in the text, never an error."""
    with tempfile.TemporaryDirectory() as tmp:
        found = debian_mirror(apt_dir(Path(tmp), {name: text}))
    assert found is None or (found in text and found.startswith(("http://", "https://")))
