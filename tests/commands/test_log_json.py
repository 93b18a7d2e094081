"""--log-format json: every line proxy64 writes to stderr is one JSON object, and the
per-connection line carries the same fields as the text line (serve, run, tun run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from proxy64.config import HostPort
from tests.helpers.aiohttp_origin import Origin
from tests.helpers.curl import curl
from tests.helpers.dnsservers import start_nsd
from tests.helpers.proxy_process import EMBEDDED, proxy_process, run_proxy64
from tests.helpers.requirements import require_root, require_tool, tool_path

CONNECTION_FIELDS = {
    "front_end", "client", "destination", "dialed", "reached", "egress",
    "bytes_up", "bytes_down", "duration", "outcome",
}  # fmt: skip


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every line must parse as a JSON object with time, level, logger and message."""
    objects = []
    for line in text.splitlines():
        data = json.loads(line)
        assert isinstance(data, dict), line
        assert {"time", "level", "logger", "message"} <= set(data), line
        objects.append(data)
    return objects


def connections(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if set(o) >= CONNECTION_FIELDS]


def test_serve_json_lines_carry_the_connection_fields(origin: Origin) -> None:
    with proxy_process(*EMBEDDED, "--log-format", "json") as proxy:
        done = curl("-o", "/dev/null", "-x", proxy.http_url, origin.url4("/bytes/12345"))
        assert done.returncode == 0, done.stderr
        done = curl("-o", "/dev/null", "-x", proxy.socks_url, "http://127.0.0.1:1/")
        assert done.returncode != 0
        deadline = time.monotonic() + 10
        while len(connections(parse_lines(proxy.output()))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        proxy.stop()
        objects = parse_lines(proxy.output())
    assert objects[0]["event"] == "startup" and objects[0]["message"] == proxy.startup_line
    ok, refused = connections(objects)
    assert ok["front_end"] == "http" and ok["outcome"] == "ok"
    assert ok["destination"] == f"127.0.0.1:{origin.port4}"
    assert ok["dialed"] == f"127.0.0.1:{origin.port4}"  # embedded: the IPv4 address itself
    assert (ok["reached"], ok["egress"]) == ("ipv4-literal-mapped", "embedded")
    assert ok["bytes_down"] > 12345 and ok["bytes_up"] > 0
    assert isinstance(ok["duration"], float) and ok["duration"] >= 0
    assert ok["client"].startswith("127.0.0.1:")
    # the text line says the same things: the message is the text line itself
    assert f"up {ok['bytes_up']} down {ok['bytes_down']}" in ok["message"]
    assert refused["front_end"] == "socks5" and refused["dialed"] is None
    assert refused["reached"] is None and "connection refused" in refused["outcome"]
    assert any(o["message"] == "SIGTERM: closing listeners" for o in objects)


def test_run_json_every_stderr_line_including_the_report(origin: Origin) -> None:
    require_tool("curl")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = run_proxy64(
        ["run", *EMBEDDED, "--log-format", "json", "--log-level", "info", "--",
         tool_path("curl"), "-sS", "-o", "/dev/null", origin.url4("/bytes/1000")],
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = parse_lines(result.stderr)
    assert objects[0]["event"] == "startup"
    (line,) = connections(objects)
    assert line["front_end"] == "http" and line["outcome"] == "ok"
    report = objects[-1]
    assert report["event"] == "report" and report["summary"]["connections"] == 1
    assert report["destinations"][0]["destination"] == f"127.0.0.1:{origin.port4}"


ZONE = """$ORIGIN tun.test.
$TTL 300
@ IN SOA ns.tun.test. host.tun.test. 1 3600 600 86400 60
@ IN NS ns.tun.test.
v4only IN A 127.0.0.1
"""


def test_tun_run_json_and_metrics(origin: Origin) -> None:
    """tun run: JSON lines, and the same metric names as serve (front end tun-tcp)."""
    require_root()
    require_tool("curl", "nsd", "ip")
    from prometheus_client.parser import text_string_to_metric_families

    with start_nsd({"tun.test.": ZONE}) as nsd:
        dns = str(HostPort(nsd.address.host, nsd.address.port))
        url = f"http://v4only.tun.test:{origin.port4}/bytes/"
        fetches = f"for n in 1000 2000 3000; do curl -sS -o /dev/null {url}$n || exit 1; done"
        script = f"{fetches}; sleep 30"
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy64", "tun", "run", "--dns", dns,
             "--nat64-prefix", "2001:db8:64::/96", "--egress", "embedded",
             "--log-format", "json", "--log-level", "info", "--metrics", "127.0.0.1:0",
             "--", "sh", "-c", script],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stderr is not None
            startup = json.loads(process.stderr.readline())
            assert startup["event"] == "startup", startup
            metrics_url = startup["message"].split("metrics ")[1].split()[0]
            deadline = time.monotonic() + 30
            ok = 0.0
            while ok < 3 and time.monotonic() < deadline:
                with urllib.request.urlopen(metrics_url, timeout=5) as response:
                    text = response.read().decode()
                families = {f.name: f for f in text_string_to_metric_families(text)}
                ok = sum(
                    s.value
                    for s in families["proxy64_connections"].samples
                    if s.labels == {"front_end": "tun-tcp", "outcome": "ok"}
                    and s.name.endswith("_total")
                )
                time.sleep(0.2)
            assert ok == 3, text
            lookups = families["proxy64_dns64_lookups"].samples
            assert any(s.labels["outcome"] == "synthesized" and s.value >= 1 for s in lookups)
            down = [
                s.value
                for s in families["proxy64_relayed_bytes"].samples
                if s.labels == {"front_end": "tun-tcp", "direction": "down"}
            ]
            assert down and down[0] >= 6000
        finally:
            process.terminate()  # SIGTERM by PID: the sandbox gets it, proxy64 reports
            _, rest = process.communicate(timeout=30)
    objects = [startup, *parse_lines(rest)]
    flows = [o for o in connections(objects) if o["outcome"] == "ok"]
    assert len(flows) >= 3 and all(o["front_end"] == "tun-tcp" for o in flows)
    assert all(o["reached"] == "dns64-synthesized" for o in flows)
    assert objects[-1]["event"] == "report"
