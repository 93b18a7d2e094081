"""The readiness report in the forms people and CI read: a text table (stderr), JSON
(docs/report.schema.json), Markdown (GitHub's job summary) and JUnit XML (one test case
per destination, failing where the --require gate failed).

Pure: a ReadinessResult in, text out. The JSON carries REPORT_VERSION; a change that
removes or renames a field raises it (docs/readiness.md keeps the history).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from proxy64.readiness import Assessment, GateResult, Level, Verdict, assess_all, gate
from proxy64.report import ReadinessReport

REPORT_VERSION = 2
FORMATS = (".json", ".md", ".xml")  # --report FILE: chosen by the file's extension
MARKDOWN_MAX_ROWS = 500  # GitHub caps a job summary at 1 MiB: the rest is counted


@dataclass(frozen=True, slots=True)
class ReadinessResult:
    """Everything a report says about one `run` / `tun run` of CMD."""

    report: ReadinessReport
    assessments: tuple[Assessment, ...]
    gate: GateResult | None  # None: no --require given
    status: int  # CMD's own exit status (128+N for a signal N)
    command: tuple[str, ...]
    mode: str  # "run" or "tun run"

    @classmethod
    def of(
        cls,
        report: ReadinessReport,
        *,
        level: Level | None,
        status: int,
        command: Sequence[str],
        mode: str,
    ) -> ReadinessResult:
        assessments = tuple(assess_all(report.destinations(), report.prefix))
        result = gate(assessments, level) if level is not None else None
        return cls(report, assessments, result, status, tuple(command), mode)

    @property
    def passed(self) -> bool:
        return self.gate is None or self.gate.passed

    def verdict_counts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for a in self.assessments:
            counts[a.verdict.value] += 1
        return counts


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def gate_line(result: ReadinessResult) -> str:
    """One line: the level and whether it held ('' without --require)."""
    if result.gate is None:
        return ""
    level = result.gate.level.value
    if result.gate.passed:
        return f"--require {level}: passed"
    return f"--require {level}: FAILED by {_count(len(result.gate.broken), 'destination')}"


# --- text table (stderr) ---------------------------------------------------------------------
def to_table(result: ReadinessResult) -> str:
    header = ("DESTINATION", "REACHED", "EGRESS", "CONNS", "FAILED", "UP", "DOWN", "VERDICT")
    stats = result.report.destinations()
    rows = [
        (
            s.destination,
            ",".join(sorted(s.reached)) or "-",
            ",".join(sorted(s.egress)) or "-",
            str(s.connections),
            str(s.failures),
            human_bytes(s.bytes_up),
            human_bytes(s.bytes_down),
            a.verdict.value,
        )
        for s, a in zip(stats, result.assessments, strict=True)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {3, 4, 5, 6}

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    summary = result.report.summary()
    lines = ["proxy64 readiness report", line(header), *(line(r) for r in rows)]
    lines.append(
        f"{_count(summary['destinations'], 'destination')}, {summary['ipv4_only']} "
        f"IPv4-only (reached through NAT64), "
        f"{_count(summary['connections'], 'connection')}, {summary['failures']} failed"
    )
    counts = ", ".join(f"{n} {v}" for v, n in result.verdict_counts().items() if n)
    if counts:
        lines.append(f"verdicts: {counts}")
    for a in result.assessments:
        lines.append(f"  {a.destination}: {a.verdict.value}: {a.reason}")
    if result.report.a_lookups:
        asked = ", ".join(f"{n} {c}" for n, c in result.report.a_lookups.items())
        lines.append(f"A-record lookups (IPv4-aware code): {asked}")
    lines.append(f"{_shell(result.command)} exited with status {result.status}")
    if result.gate is not None:
        lines.append(gate_line(result))
        for a in result.gate.broken:
            lines.append(f"  breaks it: {a.destination}: {a.verdict.value}: {a.reason}")
    return "\n".join(lines) + "\n"


def _shell(command: Sequence[str]) -> str:
    text = " ".join(shlex.join(command).split()) if command else "CMD"  # one line
    return text if len(text) <= 80 else text[:77] + "..."


# --- JSON (docs/report.schema.json) ----------------------------------------------------------
def as_dict(result: ReadinessResult) -> dict[str, Any]:
    destinations = []
    for stats, a in zip(result.report.destinations(), result.assessments, strict=True):
        entry = stats.as_dict()
        entry["verdict"] = a.verdict.value
        entry["reason"] = a.reason
        entry["reached_here"] = a.reached
        if result.gate is not None:
            entry["breaks_gate"] = a.breaks(result.gate.level)
        destinations.append(entry)
    summary: dict[str, Any] = dict(result.report.summary())
    summary["verdicts"] = result.verdict_counts()
    prefix = result.report.prefix
    return {
        "version": REPORT_VERSION,
        "mode": result.mode,
        "command": list(result.command),
        "status": result.status,
        "nat64_prefix": str(prefix) if prefix is not None else None,
        "gate": None
        if result.gate is None
        else {
            "level": result.gate.level.value,
            "passed": result.gate.passed,
            "broken": [a.destination for a in result.gate.broken],
        },
        "summary": summary,
        "destinations": destinations,
        "a_lookups": dict(result.report.a_lookups),
    }


def to_json(result: ReadinessResult) -> str:
    return json.dumps(as_dict(result), indent=2) + "\n"


# --- Markdown (GitHub job summary, GitLab/merge-request notes) ------------------------------
_MARKDOWN_SPECIAL = set("\\`*_[]<>|~&!#")


def _cell(text: str) -> str:
    """Text for a GFM table cell or list item, shown as written: one line, and every
    character Markdown would act on backslash-escaped (CommonMark §2.4), pipes included
    (GFM §4.10), so a name or an error message never splits a row or turns into markup."""
    flat = " ".join(text.split())
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in flat)


def to_markdown(result: ReadinessResult) -> str:
    if result.gate is None:
        title = "proxy64 IPv6-only readiness"
    elif result.gate.passed:
        title = f"proxy64 IPv6-only readiness: passed `--require {result.gate.level.value}`"
    else:
        title = f"proxy64 IPv6-only readiness: FAILED `--require {result.gate.level.value}`"
    lines = [f"## {title}", ""]
    lines.append(
        f"{_cell(_shell(result.command))} under proxy64 {result.mode} exited with "
        f"status {result.status}."
    )
    counts = ", ".join(f"{n} {v}" for v, n in result.verdict_counts().items() if n)
    lines += ["", f"Verdicts: {counts or 'no destinations'}.", ""]
    if result.gate is not None and result.gate.broken:
        lines.append(f"Destinations that break `--require {result.gate.level.value}`:")
        lines.append("")
        lines += [f"- {_cell(a.destination)}: {_cell(a.reason)}" for a in result.gate.broken]
        lines.append("")
    lines.append("| Destination | Verdict | Reason | Connections | Failed |")
    lines.append("| --- | --- | --- | ---: | ---: |")
    stats = result.report.destinations()
    for s, a in list(zip(stats, result.assessments, strict=True))[:MARKDOWN_MAX_ROWS]:
        lines.append(
            f"| {_cell(a.destination)} | {a.verdict.value} | {_cell(a.reason)} | "
            f"{s.connections} | {s.failures} |"
        )
    if len(stats) > MARKDOWN_MAX_ROWS:
        lines.append("")
        lines.append(f"{len(stats) - MARKDOWN_MAX_ROWS} more destinations in the JSON report.")
    if result.report.a_lookups:
        lines += ["", "A-record lookups (IPv4-aware code):", ""]
        lines += [f"- {_cell(n)}: {c}" for n, c in result.report.a_lookups.items()]
    return "\n".join(lines) + "\n"


# --- JUnit XML (the Jenkins xUnit junit-10.xsd schema) --------------------------------------
def to_junit(result: ReadinessResult) -> str:
    level = result.gate.level if result.gate is not None else None
    failing = [a for a in result.assessments if level is not None and a.breaks(level)]
    name = "proxy64 IPv6-only readiness" + (f" (--require {level.value})" if level else "")
    suites = ET.Element(
        "testsuites", name=name, tests=str(len(result.assessments)),
        failures=str(len(failing)), errors="0",
    )  # fmt: skip
    suite = ET.SubElement(
        suites, "testsuite", name=name, tests=str(len(result.assessments)),
        failures=str(len(failing)), errors="0", skipped="0",
    )  # fmt: skip
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("command", shlex.join(result.command)),
        ("status", str(result.status)),
        ("mode", result.mode),
        ("require", level.value if level else ""),
    ):
        ET.SubElement(properties, "property", name=key, value=value)
    classname = f"proxy64.readiness.{level.value if level else 'report'}"
    for a in result.assessments:
        case = ET.SubElement(suite, "testcase", name=a.destination, classname=classname)
        if level is not None and a.breaks(level):
            failure = ET.SubElement(case, "failure", type=a.verdict.value, message=a.reason)
            failure.text = f"{a.destination} breaks --require {level.value}: {a.reason}"
        out = ET.SubElement(case, "system-out")
        out.text = f"{a.verdict.value}: {a.reason}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


RENDERERS: dict[str, Callable[[ReadinessResult], str]] = {
    ".json": to_json,
    ".md": to_markdown,
    ".xml": to_junit,
}
