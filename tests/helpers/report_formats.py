"""Validators of the report files CI reads, for every test that writes one: JSON against
docs/report.schema.json, JUnit XML against the Jenkins xUnit junit-10.xsd
(tests/data/junit, source URL inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from tests.helpers.requirements import require_module

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "docs" / "report.schema.json"
JUNIT_XSD = REPO / "tests" / "data" / "junit" / "junit-10.xsd"


def validate_json(data: dict[str, Any]) -> None:
    require_module("jsonschema", "validates the JSON report against its schema")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


def validate_junit(text: str) -> ET.Element:
    require_module("xmlschema", "validates the JUnit report against the published XSD")
    import xmlschema

    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(text)
    return ET.fromstring(text)
