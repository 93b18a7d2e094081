"""The report files CI reads: JSON against docs/report.schema.json, Markdown rendered by a
CommonMark/GFM renderer (markdown-it-py) with its table checked, JUnit XML against the
Jenkins xUnit junit-10.xsd (tests/data/junit, source URL inside)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy64.readiness import Level
from proxy64.readiness_render import ReadinessResult, to_json, to_junit, to_markdown
from proxy64.report import Observation, ReadinessReport
from tests.helpers.report_formats import validate_json, validate_junit
from tests.helpers.requirements import require_module

WKP = IPv6Network("64:ff9b::/96")


def sample(level: Level | None, status: int = 0) -> ReadinessResult:
    report = ReadinessReport(prefix=WKP)
    report.add(Observation("dual.example:443", "native-ipv6", None, 5, 9, True,
                           front_end="socks5", remote=IPv6Address("2001:db8::1")))  # fmt: skip
    report.add(Observation("v4only.example:80", "dns64-synthesized", "nat64", 5, 9, True,
                           front_end="http", remote=IPv6Address("64:ff9b::64c8:a")))  # fmt: skip
    report.add(Observation("100.200.0.10:80", "ipv4-literal-mapped", "nat64", 5, 9, True,
                           kind="ipv4", remote=IPv6Address("64:ff9b::64c8:a")))  # fmt: skip
    report.add(Observation("192.0.2.9:5000", None, None, 0, 0, False, "AF_INET TCP refused",
                           front_end="tun-tcp", kind="ipv4"))  # fmt: skip
    report.a_lookups["v4only.example"] = 2
    return ReadinessResult.of(
        report, level=level, status=status, command=["curl", "-f", "http://x/|y"], mode="run"
    )


@pytest.mark.parametrize("level", [None, *Level])
def test_json_validates_against_the_schema(level: Level | None) -> None:
    data = json.loads(to_json(sample(level, status=3)))
    validate_json(data)
    assert data["version"] == 2 and data["status"] == 3 and data["nat64_prefix"] == str(WKP)
    verdicts = {d["destination"]: d["verdict"] for d in data["destinations"]}
    assert verdicts == {
        "dual.example:443": "native-ipv6",
        "v4only.example:80": "nat64",
        "100.200.0.10:80": "clat",
        "192.0.2.9:5000": "strict-nat64-refused",
    }
    if level is None:
        assert data["gate"] is None
        assert all("breaks_gate" not in d for d in data["destinations"])
    else:
        assert data["gate"]["level"] == level.value
        assert data["gate"]["passed"] is False  # 192.0.2.9 was never reached
        assert data["gate"]["broken"][-1] == "192.0.2.9:5000"


def test_schema_rejects_what_the_report_never_writes() -> None:
    data = json.loads(to_json(sample(Level.NO_CLAT)))
    require_module("jsonschema", "validates the JSON report against its schema")
    import jsonschema

    for broken in (
        {**data, "version": 1},
        {**data, "gate": {**data["gate"], "level": "sometimes"}},
        {**data, "destinations": [{**data["destinations"][0], "verdict": "fine"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_json(broken)


class TableReader(HTMLParser):
    """The cells of every <table> row in rendered HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def render_table(markdown: str) -> list[list[str]]:
    require_module("markdown_it", "renders the Markdown report as GitHub would")
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(markdown)  # GFM tables
    reader = TableReader()
    reader.feed(html)
    return reader.rows


def test_markdown_renders_one_table_row_per_destination() -> None:
    result = sample(Level.NO_CLAT, status=7)
    text = to_markdown(result)
    assert text.startswith("## proxy64 IPv6-only readiness: FAILED `--require no-clat`\n")
    assert "exited with status 7." in text
    rows = render_table(text)
    assert rows[0] == ["Destination", "Verdict", "Reason", "Connections", "Failed"]
    body = {row[0]: row for row in rows[1:]}
    assert list(body) == [a.destination for a in result.assessments]
    assert body["100.200.0.10:80"][1] == "clat"
    assert body["192.0.2.9:5000"][1:] == [
        "strict-nat64-refused",
        result.assessments[3].reason,
        "1",
        "1",
    ]
    assert "- 100.200.0.10:80: an IPv4 literal" in text.split("| Destination")[0]  # breaks it


reasons = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.from_regex(r"[a-z0-9.|<>&\\*_`-]{1,20}", fullmatch=True), reasons),
                min_size=1, max_size=5, unique_by=lambda t: t[0]))  # fmt: skip
def test_markdown_table_survives_any_destination_and_failure_text(
    rows: list[tuple[str, str]],
) -> None:
    """Pipes, backslashes, angle brackets and backticks in names or error text never split
    or break a row: the renderer still sees one row per destination with five cells."""
    report = ReadinessReport()
    for name, failure in rows:
        report.add(Observation(f"{name}:1", None, None, 0, 0, False, failure))
    result = ReadinessResult.of(report, level=Level.REACHABLE, status=1, command=["x"], mode="run")
    table = render_table(to_markdown(result))
    assert len(table) == 1 + len(rows)
    assert all(len(row) == 5 for row in table)
    assert [row[1] for row in table[1:]] == ["failed"] * len(rows)
    assert [row[0] for row in table[1:]] == [f"{name}:1" for name, _ in rows]  # as written
    expected = [" ".join(f.split()) or "no connection succeeded" for _, f in rows]
    assert [row[2] for row in table[1:]] == expected


@pytest.mark.parametrize("level", [None, *Level])
def test_junit_validates_and_fails_where_the_gate_failed(level: Level | None) -> None:
    result = sample(level)
    root = validate_junit(to_junit(result))
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == [a.destination for a in result.assessments]
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    expected = {a.destination for a in result.gate.broken} if result.gate else set()
    assert failed == expected
    assert root.find("testsuite").get("failures") == str(len(expected))  # type: ignore[union-attr]
    if level is Level.NATIVE:
        failure = cases[1].find("failure")
        assert failure is not None and failure.get("type") == "nat64"
        assert "no AAAA record" in (failure.get("message") or "")


@settings(max_examples=40)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
               min_size=1, max_size=30))  # fmt: skip
def test_junit_escapes_any_text(text: str) -> None:
    report = ReadinessReport()
    report.add(Observation(f"{text}:1", None, None, 0, 0, False, text))
    result = ReadinessResult.of(report, level=Level.NATIVE, status=0, command=[text], mode="run")
    root = validate_junit(to_junit(result))
    (case,) = root.findall("./testsuite/testcase")
    assert case.get("name") == f"{text}:1"


def test_unknown_report_extension_is_one_usage_line(tmp_path: Path) -> None:
    from tests.helpers.proxy_process import run_proxy64

    result = run_proxy64(["run", "--report", str(tmp_path / "r.txt"), "--", "true"])
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert "--report" in line and ".json" in line and ".md" in line and ".xml" in line
    bad_level = run_proxy64(["run", "--require", "ipv6ish", "--", "true"])
    assert bad_level.returncode == 2
    assert "reachable, no-clat, native" in bad_level.stderr.strip().splitlines()[-1]


def test_ipv4_address_type_is_stable() -> None:
    """The JSON lists dialed addresses as text, IPv4 and IPv6 alike."""
    report = ReadinessReport()
    report.add(Observation("a:1", "ipv4-literal-mapped", "embedded", 1, 1, True, kind="name",
                           remote=IPv4Address("100.200.0.10")))  # fmt: skip
    result = ReadinessResult.of(report, level=None, status=0, command=[], mode="tun run")
    data = json.loads(to_json(result))
    validate_json(data)
    assert data["destinations"][0]["addresses"] == ["100.200.0.10"]


@given(st.text(max_size=20))
def test_require_parser_accepts_exactly_the_levels(text: str) -> None:
    from proxy64.commands.common import parse_level
    from proxy64.errors import ConfigError

    try:
        level = parse_level(text)
    except ConfigError as exc:
        assert exc.option == "--require" and "reachable, no-clat, native" in exc.problem
        assert text not in {level.value for level in Level}
    else:
        assert level.value == text


@pytest.mark.parametrize("argv", [["run", "--help"], ["tun", "run", "--help"]])
def test_help_lists_the_levels_and_the_exit_status(argv: list[str]) -> None:
    from tests.helpers.proxy_process import run_proxy64

    done = run_proxy64(argv)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for level in Level:
        assert f"{level.value}:" in text
    assert "exit 120" in text and "or 120 when a destination breaks --require" in text
    assert ".json" in text and ".md" in text and ".xml" in text
