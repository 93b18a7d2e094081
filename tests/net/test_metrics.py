"""The metrics parts without a process: outcome labels from records and DNS64 answers,
the MeteredDialer's timings (trio MockClock), the recorder feeding the counters, the WSGI
endpoint's routes and HTTP Basic check (RFC 7617), the JSON log formatter, and the two
new parsers under hypothesis (only the declared error)."""

from __future__ import annotations

import base64
import json
import logging
import signal
import threading
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import dns.name
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from proxy64.config import HostPort
from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import ConfigError, ResolutionError
from proxy64.logformat import JsonFormatter
from proxy64.net.context import ConnectionRecord, live_tunnels
from proxy64.net.dial_types import Dialed
from proxy64.net.metrics import (
    BuildInfo,
    MeteredDialer,
    Metrics,
    connection_outcome,
    dns64_outcome,
)
from proxy64.net.metrics_http import MetricsServer, _authorized, metrics_app
from proxy64.net.recorder import Recorder
from proxy64.proto.dns64 import Dns64Answer, Outcome
from proxy64.serve_config import parse_metrics_address
from tests.helpers.fakes import FakeDialer
from tests.helpers.metric_samples import samples

QNAME = dns.name.from_text("example.test.")


def record(**fields: Any) -> ConnectionRecord:
    rec = ConnectionRecord("socks5", client="127.0.0.1:5000")
    for key, value in fields.items():
        setattr(rec, key, value)
    return rec


DEST = Destination("example.test", 443)
REMOTE = (IPv6Address("64:ff9b::c000:201"), 443)


@pytest.mark.parametrize(
    ("fields", "label"),
    [
        ({"outcome": "ok", "destination": DEST, "remote": REMOTE}, "ok"),
        ({"outcome": "open", "destination": DEST, "remote": REMOTE}, "ok"),
        ({"outcome": "client closed before sending a request"}, "handshake_failed"),
        ({"outcome": "DNS NXDOMAIN: …", "destination": DEST}, "unreachable"),
        ({"outcome": "idle for 300 s, closed", "destination": DEST, "remote": REMOTE}, "aborted"),
    ],
)
def test_connection_outcome_is_one_of_four_labels(fields: dict[str, Any], label: str) -> None:
    assert connection_outcome(record(**fields)) == label


def answer(outcome: Outcome, synthesized: bool = False) -> Dns64Answer:
    return Dns64Answer(QNAME, outcome, (), QNAME, (), synthesized, 60)


@pytest.mark.parametrize(
    ("outcome", "synthesized", "label"),
    [
        (Outcome.ANSWER, False, "native"),
        (Outcome.ANSWER, True, "synthesized"),
        (Outcome.NODATA, False, "nodata"),
        (Outcome.NXDOMAIN, False, "nxdomain"),
        (Outcome.SERVFAIL, False, "error"),
        (Outcome.TIMEOUT, False, "error"),
    ],
)
def test_dns64_outcome_labels(outcome: Outcome, synthesized: bool, label: str) -> None:
    assert dns64_outcome(answer(outcome, synthesized)) == label


def test_recorder_feeds_the_counters_and_the_live_tunnel_count() -> None:
    metrics = Metrics()
    recorder = Recorder(metrics=metrics)
    before = live_tunnels.count
    rec = record(destination=DEST)
    dialed = Dialed(
        destination=DEST,
        remote=REMOTE,
        local=(IPv6Address("::1"), 40000),
        reached=Reached.DNS64,
        egress=Egress.NAT64,
    )
    rec.reached_by(dialed)
    rec.reached_by(dialed)  # a second call (UDP: per datagram) counts the tunnel once
    assert live_tunnels.count == before + 1
    rec.bytes_up, rec.bytes_down, rec.outcome = 100, 2000, "ok"
    recorder.finish(rec)
    assert live_tunnels.count == before
    got = samples(metrics)
    assert got["proxy64_connections_total", (("front_end", "socks5"), ("outcome", "ok"))] == 1
    assert got["proxy64_relayed_bytes_total", (("direction", "up"), ("front_end", "socks5"))] == 100
    down = got["proxy64_relayed_bytes_total", (("direction", "down"), ("front_end", "socks5"))]
    assert down == 2000
    reached = (("egress", "nat64"), ("reached", "dns64-synthesized"))
    assert got["proxy64_connections_reached_total", reached] == 1
    # the pre-made zero series of the other front ends and outcomes
    assert got["proxy64_connections_total", (("front_end", "http"), ("outcome", "aborted"))] == 0


async def test_metered_dialer_times_connect_and_failures() -> None:
    metrics = Metrics()
    dialer = MeteredDialer(FakeDialer(), metrics, connect_timeout=10.0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _close, 0, host="127.0.0.1"))
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        dialed = await dialer.connect(Destination(IPv4Address("127.0.0.1"), port))
        await dialed.stream.aclose()
        with pytest.raises(ResolutionError):
            await dialer.connect(Destination("nowhere.test", 80))
        assert dialer.connect_now(Destination(IPv4Address("127.0.0.1"), port)) is None
        nursery.cancel_scope.cancel()
    got = samples(metrics)
    assert got["proxy64_dial_duration_seconds_count", (("outcome", "connected"),)] == 1
    assert got["proxy64_dial_duration_seconds_count", (("outcome", "failed"),)] == 1
    assert dialer.names == {}  # anything else is the wrapped dialer's


async def _close(stream: trio.SocketStream) -> None:
    await stream.aclose()


def call(
    app: Any, path: str, authorization: str | None = None
) -> tuple[str, bytes, dict[str, str]]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], body, seen["headers"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_endpoint_routes_and_rfc7617_basic() -> None:
    metrics = Metrics()
    metrics.registry.register(BuildInfo())
    metrics.sample(0, ("64:ff9b::/96", "given", "nat64"))
    healthy = [True]
    app = metrics_app(lambda: metrics.registry, {"alice": "pw:with:colons"}, lambda: healthy[0])
    assert call(app, "/healthz")[:2] == ("200 OK", b"ok\n")
    healthy[0] = False
    assert call(app, "/healthz")[0].startswith("503")
    status, _, headers = call(app, "/metrics")
    assert status.startswith("401") and headers["WWW-Authenticate"] == 'Basic realm="proxy64"'
    assert call(app, "/metrics", basic("alice", "wrong"))[0].startswith("401")
    assert call(app, "/metrics", basic("bob", "pw:with:colons"))[0].startswith("401")
    status, body, headers = call(app, "/metrics", basic("alice", "pw:with:colons"))
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    info = b'proxy64_nat64_prefix_info{egress="nat64",prefix="64:ff9b::/96",source="given"} 1.0'
    assert info in body
    assert call(app, "/", basic("alice", "pw:with:colons"))[0].startswith("404")
    assert b'proxy64_build_info{python="' in body
    open_app = metrics_app(lambda: metrics.registry, None, lambda: True)
    assert call(open_app, "/metrics")[0] == "200 OK"


def test_nat64_prefix_info_follows_a_prefix_change() -> None:
    metrics = Metrics()
    metrics.sample(0, ("64:ff9b::/96", "rfc7050", "nat64"))
    metrics.sample(0, ("64:ff9b::/96", "rfc7050", "nat64"))
    metrics.sample(0, ("2001:db8:64::/96", "pref64", "nat64"))
    info = {
        labels: value
        for (name, labels), value in samples(metrics).items()
        if name == "proxy64_nat64_prefix_info"
    }
    # one process: only the prefix in use (the old series is removed)
    assert info == {
        (("egress", "nat64"), ("prefix", "2001:db8:64::/96"), ("source", "pref64")): 1.0
    }


@given(st.text(max_size=200))
def test_authorized_never_raises(header: str) -> None:
    assert _authorized(header, {"alice": "pw"}) in (True, False)


@given(st.binary(max_size=100))
def test_authorized_on_any_base64_payload(payload: bytes) -> None:
    header = "Basic " + base64.b64encode(payload).decode()
    assert _authorized(header, {"alice": "pw"}) is (payload == b"alice:pw")


@given(st.text(max_size=60))
def test_parse_metrics_address_only_raises_config_error(text: str) -> None:
    try:
        value = parse_metrics_address(text)
    except ConfigError as exc:
        assert exc.option == "--metrics"
    else:
        assert value is None or isinstance(value, HostPort)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", HostPort(IPv4Address("127.0.0.1"), 9464)),
        ("[::1]:0", HostPort(IPv6Address("::1"), 0)),
        ("off", None),
        (" OFF ", None),
    ],
)
def test_parse_metrics_address_table(text: str, expected: HostPort | None) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize("bad", ["localhost", "9464", "example.com:9464", "[::1]:70000", ""])
def test_parse_metrics_address_refuses(bad: str) -> None:
    with pytest.raises(ConfigError, match="--metrics"):
        parse_metrics_address(bad)


def formatted(record: logging.LogRecord) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return data


def test_json_formatter_lines() -> None:
    plain = logging.LogRecord("proxy64.app", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    assert formatted(plain) | {"time": ""} == {
        "time": "", "level": "warning", "logger": "proxy64.app", "message": "a b",
    }  # fmt: skip
    line = logging.LogRecord("proxy64.net.recorder", logging.INFO, __file__, 1, "x", (), None)
    line.connection = {"front_end": "http", "bytes_up": 3, "dialed": None}
    data = formatted(line)
    assert data["front_end"] == "http" and data["bytes_up"] == 3 and data["dialed"] is None
    assert data["time"].endswith("Z") and "T" in data["time"]
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failing = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad", (), sys.exc_info())
    assert "ValueError: boom" in formatted(failing)["exception"]


def test_alive_follows_the_event_loop_samples() -> None:
    """/healthz of one process: 503 once the loop has not sampled for METRICS_STALE_AFTER."""
    from proxy64.defaults import METRICS_STALE_AFTER

    metrics = Metrics()
    assert metrics.alive()
    metrics.sampled_at -= METRICS_STALE_AFTER + 1  # as if the loop were stuck that long
    assert not metrics.alive()
    metrics.sample(3)
    assert metrics.alive()
    app = metrics_app(lambda: metrics.registry, None, metrics.alive)
    metrics.sampled_at -= METRICS_STALE_AFTER + 1
    assert call(app, "/healthz")[:2] == ("503 Service Unavailable", b"not serving\n")


def _blocked_signals(native_id: int) -> set[int]:
    status = Path(f"/proc/self/task/{native_id}/status").read_text(encoding="ascii")
    for line in status.splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {bit + 1 for bit in range(64) if mask >> bit & 1}
    raise AssertionError("no SigBlk line")


def test_the_endpoint_thread_takes_no_process_signal() -> None:
    """The supervisor waits for SIGCHLD and the stop signals with sigtimedwait(); a signal
    the endpoint's thread took instead would be lost and the stop would wait its timeout."""
    server = MetricsServer(HostPort(IPv4Address("127.0.0.1"), 0), CollectorRegistry)
    server.start()
    try:
        thread = next(t for t in threading.enumerate() if t.name == "proxy64-metrics")
        assert thread.native_id is not None
        blocked = _blocked_signals(thread.native_id)
    finally:
        server.close()
    wanted = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    assert wanted <= blocked, f"not blocked: {wanted - blocked}"
