"""Real apps and real data through proxy64 and tayga: binary transfers both ways checked by
SHA-256, an unmodified curl under proxychains4, and the compose demo's proxy64 and client
services run as compose.yaml writes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from functools import partial
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers.proxy_process import ProxyProcess
from tests.helpers.requirements import require_tool, tool_path
from tests.network import topology as T
from tests.network.clients import (
    FRONT_ENDS,
    assert_through_tayga,
    proxy_args,
)
from tests.network.configs import ORIGIN_SERVER, REPO
from tests.network.netlab import Netlab


def load_origin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("origin_server", ORIGIN_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_binary_transfers_intact_both_ways(
    netlab: Netlab, wkp: ProxyProcess, front_end: str
) -> None:
    """8 MiB down and 4 MiB of random bytes up through proxy64 and tayga, by SHA-256."""
    size_down, size_up = 8 * 1024 * 1024, 4 * 1024 * 1024
    expected = hashlib.sha256(load_origin_module().pattern(size_down)).hexdigest()
    target = netlab.workdir / f"down-{front_end}.bin"
    url = f"http://{T.V4ONLY}/bytes/{size_down}"
    result = netlab.curl("--fail", "-o", str(target), *proxy_args(wkp, front_end), url, timeout=60)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    upload = netlab.workdir / f"up-{front_end}.bin"
    payload = os.urandom(size_up)
    upload.write_bytes(payload)
    result = netlab.curl(
        "--fail",
        "--data-binary",
        f"@{upload}",
        "-H",
        "Content-Type: application/octet-stream",
        *proxy_args(wkp, front_end),
        f"http://{T.V4ONLY}/upload",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    fields = dict(part.split("=", 1) for part in result.stdout.split())
    assert fields["sha256"] == hashlib.sha256(payload).hexdigest()
    assert int(fields["length"]) == size_up
    assert ip_address(fields["peer"]) in T.DYNAMIC_POOL


def test_proxychains4_app_reaches_origin(netlab: Netlab, wkp: ProxyProcess) -> None:
    """An unmodified app (curl without proxy options) under proxychains4 pointed at proxy64."""
    require_tool("proxychains4")
    assert wkp.socks is not None
    conf = netlab.workdir / "proxychains.conf"
    conf.write_text(
        "strict_chain\nproxy_dns\nremote_dns_subnet 224\ntcp_read_time_out 15000\n"
        f"tcp_connect_time_out 8000\n[ProxyList]\nsocks5 {wkp.socks[0]} {wkp.socks[1]}\n"
    )
    for url in (f"http://{T.V4ONLY}/chains", f"http://{T.ORIGIN4}/chains"):
        argv = [tool_path("proxychains4"), "-q", "-f", str(conf), tool_path("curl")]
        result = netlab.run(
            netlab.client, [*argv, "-sS", "--max-time", "10", url], check=False, timeout=20
        )
        assert result.returncode == 0, result.stderr
        assert_through_tayga(result.stdout)


def compose_service(name: str) -> dict[str, Any]:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    found: dict[str, Any] = compose["services"][name]
    return found


def environment(service: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in service["environment"].items()]


def test_compose_proxy64_and_client_services_run_in_the_test_network(netlab: Netlab) -> None:
    """The proxy64 and client services of compose.yaml, their entrypoints, commands and
    environment as written there, run in the client namespace (whose address is the
    proxy64 service's, fd64:c::2) against tayga, NSD and the origin, which the test
    network already starts through the other services' entrypoints: `docker compose up`
    without Docker. The client must print four lines, all through tayga."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    proxy = compose_service("proxy64")
    client = compose_service("client")
    assert proxy["networks"]["v6only"]["ipv6_address"] == str(T.CLIENT6)
    path = f"PATH={Path(sys.executable).parent}:/usr/sbin:/sbin:{os.environ.get('PATH', '')}"
    entrypoint = REPO / proxy["entrypoint"][0].lstrip("/")
    netlab.spawn(
        "compose-proxy64",
        netlab.client,
        ["env", *environment(proxy), path, "sh", str(entrypoint), *proxy["command"]],
    )
    try:
        for port in (T.SOCKS_PORT, T.PROXY_HTTP_PORT):
            netlab.wait_until(
                "compose-proxy64",
                partial(netlab.tcp_open, netlab.client, str(T.CLIENT6), port),
                f"listener :{port}",
            )
        script = REPO / client["entrypoint"][0].lstrip("/")
        result = netlab.run(
            netlab.client,
            ["env", *environment(client), "sh", str(script)],
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, (
            result.stdout + result.stderr + netlab.log("compose-proxy64")[-2000:]
        )
        lines = result.stdout.splitlines()
        assert len(lines) == 4, lines
        for line in lines:
            assert line.startswith("client: ") and " -> " in line, line
            assert_through_tayga(line.split(" -> ", 1)[1])
    finally:
        netlab.stop("compose-proxy64")
