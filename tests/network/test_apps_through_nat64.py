"""Real apps and real data through proxy64 and tayga: binary transfers both ways checked by
SHA-256, an unmodified curl under proxychains4, and the compose demo's client script.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from ipaddress import ip_address
from types import ModuleType

import pytest

from tests.helpers.proxy_process import ProxyProcess
from tests.helpers.requirements import require_tool, tool_path
from tests.network import topology as T
from tests.network.clients import (
    FRONT_ENDS,
    assert_through_tayga,
    hostport,
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


def test_compose_client_script_reaches_the_origin(netlab: Netlab, wkp: ProxyProcess) -> None:
    """docker/client/demo.sh, run in the client namespace with the compose environment
    pointed at this proxy64: what `docker compose up` prints, without Docker."""
    env = [
        f"ALL_PROXY=socks5h://{hostport(wkp.socks)}",
        f"HTTPS_PROXY=http://{hostport(wkp.http)}",
        f"HTTP_PROXY_URL=http://{hostport(wkp.http)}",
        f"ORIGIN_NAME={T.V4ONLY}",
        f"ORIGIN_IPV4={T.ORIGIN4}",
    ]
    script = str(REPO / "docker" / "client" / "demo.sh")
    result = netlab.run(netlab.client, ["env", *env, "sh", script], check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines
    for line in lines:
        assert line.startswith("client: ") and " -> " in line, line
        assert_through_tayga(line.split(" -> ", 1)[1])
