"""`serve` started from a shell's 1024 open files: it raises its soft limit to what
--max-connections uses and holds more tunnels than 1024 fds allow; with a hard limit too
low for --max-connections it says so, once, and serves anyway."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from proxy64.defaults import MAX_CONNECTIONS
from proxy64.fd_limit import serve_need
from tests.helpers import socks5_client
from tests.helpers.fds import SHELL_SOFT, from_a_shells_limit, soft_nofile
from tests.helpers.proxy_process import EMBEDDED, proxy_process
from tests.helpers.requirements import require_tool, tool_path

TUNNELS = 700  # 1,400 fds in the proxy: past what a 1024 limit holds


@contextmanager
def own_fds(count: int) -> Iterator[None]:
    """This test process holds `count` sockets too (clients and the origin's side): raise its
    own soft limit for the test, or skip when the hard limit cannot hold them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the test process needs {wanted} open files; its hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def holding_origin() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP listener on 127.0.0.1 that accepts every connection and keeps it open: its
    port and the connections it holds."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], held
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for conn in held:
            conn.close()


def test_serve_from_a_shells_limit_raises_it_and_holds_past_1024_fds() -> None:
    prlimit, expected = from_a_shells_limit(serve_need(MAX_CONNECTIONS).wanted)
    if expected < 2 * TUNNELS + 512:
        pytest.skip(f"the hard open-files limit here is {expected}: too low for {TUNNELS} tunnels")
    with ExitStack() as stack:
        stack.enter_context(own_fds(2 * TUNNELS))
        port, reached = stack.enter_context(holding_origin())
        proxy = stack.enter_context(proxy_process(*EMBEDDED, wrapper=prlimit))
        assert soft_nofile(proxy.pid) == expected
        assert "open files limit" not in proxy.output()
        assert proxy.socks is not None
        tunnels: list[socket.socket] = []
        try:
            for _ in range(TUNNELS):
                sock = socket.create_connection(("127.0.0.1", proxy.socks[1]), timeout=10)
                tunnels.append(sock)
                socks5_client.connect(sock, "127.0.0.1", port)
            deadline = time.monotonic() + 10
            while len(reached) < TUNNELS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(reached) == TUNNELS  # every tunnel reached the origin
            assert len(os.listdir(f"/proc/{proxy.pid}/fd")) > 2 * TUNNELS > SHELL_SOFT
            assert "Too many open files" not in proxy.output()
        finally:
            for sock in tunnels:
                sock.close()


def test_a_hard_limit_too_low_for_max_connections_is_one_warning_naming_both() -> None:
    require_tool("prlimit")
    prlimit = [tool_path("prlimit"), f"--nofile={SHELL_SOFT}:{SHELL_SOFT}", "--"]
    with proxy_process(*EMBEDDED, wrapper=prlimit) as proxy:
        assert soft_nofile(proxy.pid) == SHELL_SOFT
        warnings = [line for line in proxy.output().splitlines() if "open files limit" in line]
    (warning,) = warnings
    assert "open files limit 1024 is below the 8448 that --max-connections 4096 needs" in warning
    assert "past about 384 connections" in warning and "ulimit -Hn" in warning
