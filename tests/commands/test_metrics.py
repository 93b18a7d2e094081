"""--metrics end to end: a real Prometheus server scrapes a running `proxy64 serve` while
curl uses it, and the series it stored (read back through its HTTP API) match the traffic
sent, with one process and with --workers 2 (the sum over workers, restarts counted).
The exposition is also parsed with prometheus-client's parser: Prometheus naming, no
label that holds an address. /healthz, authentication and the exposure check too."""

from __future__ import annotations

import base64
import os
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.helpers.aiohttp_origin import Origin
from tests.helpers.curl import curl
from tests.helpers.dnsservers import DnsProcess
from tests.helpers.prometheus import Prometheus, running_prometheus
from tests.helpers.proxy_process import EMBEDDED_PREFIX as NSP
from tests.helpers.proxy_process import ProxyProcess, children, proxy_process, run_proxy64
from tests.helpers.requirements import require_module, require_tool

NAME = "v4only.p64core.test"
USER, PASSWORD = "scraper", "s3cret-pw"
ALLOWED_LABELS = {
    "front_end", "outcome", "direction", "reached", "egress", "le",
    "prefix", "source", "version", "python",
}  # fmt: skip


def metrics_url(proxy: ProxyProcess) -> str:
    line = proxy.startup_line
    start = line.index("metrics http://") + len("metrics ")
    return line[start:].split()[0].rstrip(";")


def fetch(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def socks5_hold(proxy: ProxyProcess, port: int, auth: tuple[str, str] | None) -> socket.socket:
    """A SOCKS5 CONNECT to 127.0.0.1:port left open (RFC 1928, RFC 1929 when auth)."""
    assert proxy.socks is not None
    sock = socket.create_connection(proxy.socks, timeout=10)
    sock.sendall(b"\x05\x01" + (b"\x02" if auth else b"\x00"))
    assert sock.recv(2) == (b"\x05\x02" if auth else b"\x05\x00")
    if auth:
        user, password = (part.encode() for part in auth)
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        assert sock.recv(2) == b"\x01\x00"
    sock.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
    reply = sock.recv(10)
    assert reply[:2] == b"\x05\x00", reply
    return sock


def send_traffic(proxy: ProxyProcess, origin: Origin, auth: tuple[str, str] | None) -> None:
    """3 HTTP forward GETs, 1 CONNECT, 2 SOCKS5 GETs to a name; 1 refused; 1 garbage."""
    userinfo = f"{auth[0]}:{auth[1]}@" if auth else ""
    http = proxy.http_url.replace("http://", f"http://{userinfo}")
    socks = proxy.socks_url.replace("socks5h://", f"socks5h://{userinfo}")
    url = f"http://{NAME}:{origin.port4}/bytes/"
    for _ in range(3):
        done = curl("-o", "/dev/null", "-x", http, url + "100000")
        assert done.returncode == 0, done.stderr
    done = curl("-o", "/dev/null", "-p", "-x", http, url + "30000")
    assert done.returncode == 0, done.stderr
    for _ in range(2):
        done = curl("-o", "/dev/null", "-x", socks, url + "50000")
        assert done.returncode == 0, done.stderr
    refused = curl("-o", "/dev/null", "-x", socks, "http://127.0.0.1:1/")
    assert refused.returncode != 0
    assert proxy.socks is not None
    with socket.create_connection(proxy.socks, timeout=10) as garbage:
        garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not SOCKS: the handshake fails
        garbage.settimeout(10)
        while garbage.recv(4096):
            pass


def check_exposition(text: str) -> None:
    """prometheus-client's parser accepts it; names and labels follow the conventions."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    for expected in (
        "proxy64_connections", "proxy64_relayed_bytes", "proxy64_connections_reached",
        "proxy64_dial_duration_seconds", "proxy64_dns64_lookups", "proxy64_dns64_cache_hits",
        "proxy64_connections_active", "proxy64_tunnels_active", "proxy64_worker_restarts",
        "proxy64_nat64_prefix_info", "proxy64_build_info",
    ):  # fmt: skip
        assert expected in names, sorted(names)
    for family in families:
        assert family.name.startswith("proxy64_"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == family.name + "_total", sample.name
            assert set(sample.labels) <= ALLOWED_LABELS, sample.labels
            for value in sample.labels.values():
                assert "127.0.0.1" not in value and NAME not in value, sample


@pytest.mark.parametrize("workers", [1, 2])
def test_prometheus_scrapes_counts_that_match_the_traffic(
    workers: int, origin: Origin, dns: DnsProcess
) -> None:
    require_tool("curl", "prometheus")
    require_module("prometheus_client", "the metrics endpoint")
    auth = (USER, PASSWORD) if workers > 1 else None  # one run authenticated, one open
    env = dict(os.environ)
    if auth:
        env["PROXY64_AUTH"] = f"{USER}:{PASSWORD}"
    args = ["--dns", str(dns.address), "--egress", "embedded", "--nat64-prefix", NSP,
            "--metrics", "127.0.0.1:0", "--workers", str(workers)]  # fmt: skip
    with proxy_process(*args, env=env) as proxy:
        url = metrics_url(proxy)
        target = urlsplit(url).netloc
        with running_prometheus([target], basic_auth=auth) as prom:
            prom.wait_for('up{job="proxy64"}', lambda v: v == 1)
            held = socks5_hold(proxy, origin.port4, auth)
            try:
                prom.wait_for("proxy64_connections_active", lambda v: v == 1)
                prom.wait_for("proxy64_tunnels_active", lambda v: v == 1)
            finally:
                held.close()
            send_traffic(proxy, origin, auth)
            if workers > 1:
                worker = min(children(proxy.pid))
                os.kill(worker, signal.SIGKILL)  # its counters must stay in the sum
                prom.wait_for("proxy64_worker_restarts_total", lambda v: v == 1)
            check_counts(prom, workers)
        status, body = fetch(url, auth)
        assert status == 200
        check_exposition(body.decode())


def check_counts(prom: Prometheus, workers: int) -> None:
    expected = {
        ("http", "ok"): 3.0,
        ("http-connect", "ok"): 1.0,
        ("socks5", "ok"): 3.0,  # 2 GETs + the connection held open
        ("socks5", "unreachable"): 1.0,
        ("socks5", "handshake_failed"): 1.0,
    }
    query = "sum by (front_end, outcome) (proxy64_connections_total) > 0"

    def counts() -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["front_end"], dict(labels)["outcome"]): value
            for labels, value in prom.query(query).items()
        }

    deadline = time.monotonic() + 30
    while counts() != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert counts() == expected
    down = prom.query("sum by (front_end) (proxy64_relayed_bytes_total{direction='down'})")
    by_front = {dict(labels)["front_end"]: value for labels, value in down.items()}
    assert 300_000 <= by_front["http"] < 300_000 + 3 * 2_000
    assert 30_000 <= by_front["http-connect"] < 30_000 + 2_000
    assert 100_000 <= by_front["socks5"] < 100_000 + 2 * 2_000
    reached = prom.value(
        "sum(proxy64_connections_reached_total{reached='dns64-synthesized',egress='embedded'})"
    )
    assert reached == 6
    assert prom.value("sum(proxy64_connections_reached_total)") == 7  # + the literal held
    assert prom.value("sum(proxy64_dial_duration_seconds_count{outcome='connected'})") == 7
    assert prom.value("sum(proxy64_dial_duration_seconds_count{outcome='failed'})") == 1
    lookups = prom.value("sum(proxy64_dns64_lookups_total{outcome='synthesized'})")
    assert lookups is not None and 1 <= lookups <= workers  # each worker has its own cache
    hits = prom.value("sum(proxy64_dns64_cache_hits_total)")
    assert hits is not None and hits >= 6 - lookups
    assert prom.value("sum(proxy64_dns64_lookups_total{outcome!='synthesized'})") == 0
    info = prom.query("proxy64_nat64_prefix_info")
    assert list(info.values()) == [1.0]
    labels = dict(next(iter(info)))
    assert (labels["prefix"], labels["source"], labels["egress"]) == (NSP, "given", "embedded")
    prom.wait_for("proxy64_connections_active", lambda v: v == 0)
    prom.wait_for("proxy64_tunnels_active", lambda v: v == 0)


def test_healthz_is_open_and_metrics_ask_for_the_credentials() -> None:
    require_module("prometheus_client", "the metrics endpoint")
    env = dict(os.environ, PROXY64_AUTH=f"{USER}:{PASSWORD}")
    with proxy_process("--metrics", "127.0.0.1:0", "--egress", "embedded", env=env) as proxy:
        url = metrics_url(proxy)
        assert fetch(url.replace("/metrics", "/healthz")) == (200, b"ok\n")
        status, body = fetch(url)
        assert status == 401 and b"authentication required" in body
        assert fetch(url, (USER, "wrong"))[0] == 401
        status, body = fetch(url, (USER, PASSWORD))
        assert status == 200 and b"proxy64_connections_total" in body
        assert fetch(url.replace("/metrics", "/other"))[0] == 404


def test_non_loopback_metrics_without_authentication_is_refused() -> None:
    env = {**os.environ, "PROXY64_AUTH": ""}
    args = ["serve", "--socks", "127.0.0.1:0", "--http", "off", "--metrics", "0.0.0.0:0"]
    done = run_proxy64(args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics" in lines[0], done.stderr
    assert "refusing to listen on 0.0.0.0:0 without authentication" in lines[0]
    assert "read its metrics" in lines[0]


def test_bad_metrics_address_is_one_line() -> None:
    done = run_proxy64(["serve", "--metrics", "localhost"])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics" in lines[0] and "has no port" in lines[0], lines


def test_metrics_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_proxy64(["serve", "--socks", "127.0.0.1:0", "--http", "off",
                            "--metrics", f"127.0.0.1:{port}"])  # fmt: skip
    assert done.returncode == 2
    assert "already in use" in done.stderr and "--metrics" in done.stderr, done.stderr


def test_workers_multiprocess_directory_is_removed_at_stop() -> None:
    def directories() -> set[str]:
        tmp = tempfile.gettempdir()
        return {p for p in os.listdir(tmp) if p.startswith("proxy64-metrics-")}

    before = directories()
    with proxy_process("--metrics", "127.0.0.1:0", "--workers", "2", "--egress", "embedded"):
        during = directories() - before
        assert len(during) == 1  # the supervisor's private multiprocess directory
    assert not directories() & during
