"""The metrics endpoint (--metrics ADDR): /metrics for Prometheus, /healthz for probes.

A small WSGI server on its own daemon thread: the same code serves a trio process
(`serve`, `run`, `tun`) and the `serve --workers N` supervisor, which never runs trio.
- /metrics: the text exposition format (prometheus-client's generate_latest). When the
  proxy has credentials, it asks for them too (HTTP Basic, RFC 7617), so a non-loopback
  endpoint is never open unless --allow-open says so (serve_config.check_safety).
- /healthz: 200 "ok" while the process serves (its event loop sampled the gauges within
  METRICS_STALE_AFTER; with workers: while one worker runs, the supervisor kills a stuck
  one), else 503; never authenticated, it tells nothing but that.
With --workers N the supervisor turns on prometheus-client's multiprocess mode in a
private temporary directory before any worker exists: every process writes its values to
files there, and the supervisor's /metrics adds them up (MultiProcessCollector), so one
scrape gives the sum over workers, restarted ones included. A dead worker's gauge file is
removed (mark_process_dead); its counters stay, so totals never go backwards.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from ipaddress import ip_address
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest

from proxy64.config import HostPort
from proxy64.defaults import METRICS_REQUEST_TIMEOUT
from proxy64.errors import ConfigError
from proxy64.net.listeners import describe_bind_error

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The text format every Prometheus 2.x and 3.x parses; every proxy64 name fits it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = METRICS_REQUEST_TIMEOUT  # an idle client does not keep its thread forever

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the per-connection log lines."""


def _authorized(header: str | None, credentials: Mapping[str, str]) -> bool:
    """An RFC 7617 Basic header naming one of the users with its password."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, sep, password = decoded.partition(":")
    expected = credentials.get(user)
    return (
        bool(sep)
        and expected is not None
        and hmac.compare_digest(expected.encode(), password.encode())
    )


def metrics_app(
    registry: Callable[[], CollectorRegistry],
    credentials: Mapping[str, str] | None,
    healthy: Callable[[], bool],
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application: /metrics, /healthz, 404 for anything else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = healthy()
            body = b"ok\n" if ok else b"not serving\n"
            start_response("200 OK" if ok else "503 Service Unavailable", _text(body))
            return [body]
        if path != "/metrics":
            body = b"not found: proxy64 serves /metrics and /healthz\n"
            start_response("404 Not Found", _text(body))
            return [body]
        if credentials and not _authorized(environ.get("HTTP_AUTHORIZATION"), credentials):
            body = b"authentication required: the proxy's user:password, HTTP Basic\n"
            headers = [*_text(body), ("WWW-Authenticate", 'Basic realm="proxy64"')]
            start_response("401 Unauthorized", headers)
            return [body]
        output = generate_latest(registry())
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(output)))]
        )
        return [output]

    return app


def _text(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]


class MetricsServer:
    """The endpoint, bound at construction (a bad address fails before start-up) and
    served on a daemon thread by start(); close() stops it."""

    def __init__(
        self,
        address: HostPort,
        registry: Callable[[], CollectorRegistry],
        *,
        credentials: Mapping[str, str] | None = None,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        server_class = _Server6 if address.host.version == 6 else _Server
        app = metrics_app(registry, credentials, healthy)
        try:
            self._server = make_server(
                str(address.host), address.port, app, server_class, _QuietHandler
            )
        except OSError as exc:
            raise ConfigError("--metrics", describe_bind_error(address, exc)) from None
        host, port = self._server.socket.getsockname()[:2]
        self.address = HostPort(ip_address(host.split("%")[0]), int(port))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def fileno(self) -> int:
        return self._server.socket.fileno()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="proxy64-metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # A signal sent to the process goes to any thread that does not block it: the
        # supervisor waits for SIGCHLD and the stop signals with sigtimedwait(), which
        # never sees one this thread took (and discarded), so this thread blocks them all.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        self._server.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def close_in_child(self) -> None:
        """In a forked worker: let go of the supervisor's listening socket (no thread
        serves it there, and a connection must never wait on a socket nobody accepts)."""
        os.close(self.fileno())


# --- serve --workers N: the sum over processes ---------------------------------------


def enable_multiprocess() -> Path:
    """Turn on prometheus-client's multiprocess mode in a fresh private directory; call
    before any metric object exists in this process (the supervisor, before forking)."""
    from prometheus_client import values

    directory = Path(tempfile.mkdtemp(prefix="proxy64-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # chosen at import otherwise
    return directory


def remove_multiprocess(directory: Path) -> None:
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(directory, ignore_errors=True)


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry whose collection is the sum of every process's files in directory."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def forget_process(directory: Path, pid: int) -> None:
    """A worker is gone: its live gauges no longer count (counters stay in the sum)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
