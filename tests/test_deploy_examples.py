"""The deployment files in examples/: the systemd unit passes `systemd-analyze verify`
(offline) with its hardening in place, its sample TOML config goes through the real
config parser, and the Kubernetes manifests validate against the Kubernetes schemas
(kubernetes-validate, pinned version) with the probes and scrape annotations they claim."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from proxy64.config import HostPort
from proxy64.errors import ConfigError
from proxy64.serve_config import build_settings, load_toml
from tests.helpers.requirements import require_module, tool_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
UNIT = EXAMPLES / "systemd" / "proxy64.service"
CONFIG = EXAMPLES / "systemd" / "proxy64.toml"
MANIFESTS = sorted((EXAMPLES / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"
INSTALLED_PATH = "/usr/local/bin/proxy64"
HARDENING = (
    "DynamicUser=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=", "AmbientCapabilities=",
    "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
    "MemoryDenyWriteExecute=yes", "RestrictNamespaces=yes",
)  # fmt: skip


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's proxy64 (verify checks it exists)."""
    proxy64 = Path(sys.executable).parent / "proxy64"
    assert proxy64.exists(), f"{proxy64}: pip install -e . makes it"
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED_PATH in text
    unit = tmp_path / "proxy64.service"
    unit.write_text(text.replace(INSTALLED_PATH, str(proxy64)), encoding="utf-8")
    return unit


def test_systemd_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    analyze = tool_path("systemd-analyze")
    unit = unit_for_this_machine(tmp_path)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # unknown keys are only warned about
    lines = {line.strip() for line in UNIT.read_text(encoding="utf-8").splitlines()}
    missing = [directive for directive in HARDENING if directive not in lines]
    assert not missing, missing
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines  # SIGHUP: reload


def test_systemd_unit_exposure_is_low(tmp_path: Path) -> None:
    """systemd's own score of the sandbox, 0 (locked down) to 10: at most 2."""
    analyze = tool_path("systemd-analyze")
    unit = unit_for_this_machine(tmp_path)
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_a_verify_failure_is_seen(tmp_path: Path) -> None:
    """The premise of the test above: verify fails on a unit whose program is missing."""
    analyze = tool_path("systemd-analyze")
    unit = tmp_path / "broken.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_PATH, "/nonexistent/x"))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0


def test_sample_config_goes_through_the_config_parser(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:correct-horse\n", encoding="utf-8")
    values = load_toml(CONFIG)
    # the unit passes --auth-file: as on the command line, it overrides the file
    settings = build_settings(values, {"auth_file": str(users)}, {})
    assert settings.socks is not None and str(settings.socks) == "[::]:1080"
    assert settings.http is not None and str(settings.http) == "[::]:8080"
    assert settings.credentials == (("alice", "correct-horse"),)
    assert settings.metrics == HostPort(IPv4Address("127.0.0.1"), 9464)
    assert settings.log_format == "json" and settings.workers == 2
    # without the unit's credential the same file is refused: it listens beyond loopback
    with pytest.raises(ConfigError, match="without authentication"):
        build_settings(values, {}, {})


def documents() -> list[tuple[str, dict[str, Any]]]:
    import yaml

    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path.name, doc))
    return out


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    require_module("kubernetes_validate", "validating the example manifests")
    require_module("yaml", "reading the example manifests")
    import kubernetes_validate

    docs = documents()
    assert {name for name, _ in docs} == {"sidecar.yaml", "shared.yaml"}
    for name, doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["kind"] in {"Deployment", "Service"}, name
    bad = dict(docs[0][1], spec={"replicas": "two"})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def containers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def test_kubernetes_manifests_say_what_the_readme_promises() -> None:
    require_module("yaml", "reading the example manifests")
    docs = dict(((name, doc["kind"]), doc) for name, doc in documents())
    shared = docs["shared.yaml", "Deployment"]
    annotations = shared["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    proxy = containers(shared)["proxy64"]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--metrics=[::]:9464" in proxy["args"]
    assert "--auth-file=/etc/proxy64/users" in proxy["args"]
    service = docs["shared.yaml", "Service"]
    assert {p["port"] for p in service["spec"]["ports"]} == {1080, 8080, 9464}
    sidecar = containers(docs["sidecar.yaml", "Deployment"])
    env = {e["name"]: e["value"] for e in sidecar["app"]["env"]}
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:8080"
    assert "--http=127.0.0.1:8080" in sidecar["proxy64"]["args"]
    assert sidecar["proxy64"]["restartPolicy"] == "Always"  # a native sidecar


def test_kubernetes_proxy_arguments_are_accepted_by_serve() -> None:
    """Every proxy64 argument list in the manifests parses as `proxy64 serve` options."""
    require_module("yaml", "reading the example manifests")
    from proxy64.cli import build_parser

    parser = build_parser()
    for name, doc in documents():
        if doc["kind"] != "Deployment":
            continue
        args = containers(doc)["proxy64"]["args"]
        parsed = parser.parse_args(args)
        assert parsed.command == "serve", name
