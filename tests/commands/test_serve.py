"""`proxy64 serve` end to end, as a subprocess: start-up line, curl through both front ends,
the embedded egress to an IPv4-only origin, names with only an A record, native ::1,
the safe default, one-line errors and a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import socks5_client
from tests.helpers.aiohttp_origin import Origin
from tests.helpers.curl import curl, echo
from tests.helpers.dnsservers import DnsProcess
from tests.helpers.proxy_process import EMBEDDED, proxy_process, run_proxy64, start_proxy
from tests.helpers.proxy_process import EMBEDDED_PREFIX as NSP


def test_startup_line_names_listeners_prefix_and_egress() -> None:
    with proxy_process(*EMBEDDED) as proxy:
        assert proxy.startup_line.startswith("proxy64: SOCKS5 127.0.0.1:")
        assert f"NAT64 prefix {NSP} (given), egress embedded" in proxy.startup_line
        assert proxy.socks is not None and proxy.socks[1] > 0
        assert proxy.http is not None and proxy.http[1] > 0
        lines = [ln for ln in proxy.output().splitlines() if ln.startswith("proxy64:")]
        assert lines == [proxy.startup_line]  # ONE line


def test_embedded_defaults_to_the_well_known_prefix() -> None:
    with proxy_process("--egress", "embedded", "--http", "off") as proxy:
        assert proxy.http is None and proxy.prefix == "64:ff9b::/96"
        assert proxy.egress == "embedded"
        assert "SOCKS5 127.0.0.1:" in proxy.startup_line and "HTTP off" in proxy.startup_line


def test_ipv4_literal_through_http_and_socks_embedded(origin: Origin) -> None:
    with proxy_process(*EMBEDDED) as proxy:
        via_http = echo(curl("-x", proxy.http_url, origin.url4("/echo")))
        via_connect = echo(curl("-p", "-x", proxy.http_url, origin.url4("/echo")))
        via_socks = echo(curl("-x", proxy.socks_url, origin.url4("/echo")))
        for answer in (via_http, via_connect, via_socks):
            assert answer["path_qs"] == "/echo"
            assert answer["peer"][0] == "127.0.0.1"  # type: ignore[index]  # dialed over IPv4
        time.sleep(0.2)
        log = proxy.output()
    assert "ipv4-literal-mapped egress embedded" in log
    assert log.count("ipv4-literal-mapped") >= 3


def test_name_with_only_an_a_record_is_synthesized_then_dialed(
    origin: Origin, dns: DnsProcess
) -> None:
    with proxy_process(*EMBEDDED, "--dns", str(dns.address)) as proxy:
        url = f"http://v4only.p64core.test:{origin.port4}/echo"
        via_socks = echo(curl("-x", proxy.socks_url, url))
        via_http = echo(curl("-x", proxy.http_url, url))
        assert via_socks["path_qs"] == via_http["path_qs"] == "/echo"
        time.sleep(0.2)
        log = proxy.output()
    assert f"v4only.p64core.test:{origin.port4} via 127.0.0.1:{origin.port4} " in log
    assert "dns64-synthesized egress embedded" in log


def test_ipv6_origin_reached_natively(origin: Origin, dns: DnsProcess) -> None:
    with proxy_process(*EMBEDDED, "--dns", str(dns.address)) as proxy:
        echo(curl("-x", proxy.socks_url, origin.url6("/echo")))
        echo(curl("-x", proxy.http_url, f"http://v6only.p64core.test:{origin.port6}/echo"))
        time.sleep(0.2)
        log = proxy.output()
    assert f"via [::1]:{origin.port6} native-ipv6 egress none" in log
    assert "ipv4-literal-mapped" not in log and "dns64-synthesized" not in log


def test_strict_wkp_refuses_private_ipv4_with_a_clear_answer(origin: Origin) -> None:
    """Under 64:ff9b::/96 the embedded egress carries loopback; --strict-wkp refuses what a
    strict NAT64 refuses (RFC 6052 §3.1) before dialing, SOCKS reply 2 and HTTP 403."""
    with proxy_process("--egress", "embedded") as proxy:
        echo(curl("-x", proxy.http_url, origin.url4("/echo")))
    with proxy_process("--egress", "embedded", "--strict-wkp") as proxy:
        result = curl(
            "-x", proxy.http_url, "-o", "/dev/null", "-w", "%{http_code}", "http://10.1.2.3/"
        )
        assert result.stdout == "403"
        socks = curl("-x", proxy.socks_url, "http://192.168.7.7/")
        assert socks.returncode == 97 and "(2)" in socks.stderr, socks.stderr
        time.sleep(0.2)
        assert "--strict-wkp: a strict NAT64 refuses 192.168.7.7 under 64:ff9b::/96" in (
            proxy.output()
        )


def test_non_loopback_listener_without_auth_is_refused() -> None:
    result = run_proxy64(["serve", "--socks", "0.0.0.0:0", "--http", "off"], timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--socks" in lines[0] and "without authentication" in lines[0]
    assert "--allow-open" in lines[0] and "--auth-file" in lines[0]


def test_non_loopback_listener_with_auth_starts(tmp_path: Path, origin: Origin) -> None:
    users = tmp_path / "users"
    users.write_text("alice:Secret-Pw\n")
    with proxy_process(
        "--socks",
        "0.0.0.0:0",
        "--http",
        "off",
        "--auth-file",
        str(users),
        *EMBEDDED,
        "--log-level",
        "debug",
    ) as proxy:
        assert proxy.socks is not None and proxy.socks[0] == "0.0.0.0"
        port = proxy.socks[1]
        # a shared proxy does not open its own host to its clients (SOCKS reply 2)
        good = curl("-x", f"socks5h://alice:Secret-Pw@127.0.0.1:{port}", origin.url4("/echo"))
        assert good.returncode == 97 and "(2)" in good.stderr, good.stderr
        time.sleep(0.2)
        assert "denied by rule 1 (deny dest this-host, built-in)" in proxy.output()
        assert "--allow-host-access" in proxy.output()
        bad = curl("-x", f"socks5h://alice:wrong@127.0.0.1:{port}", origin.url4("/echo"))
        assert bad.returncode != 0
        none = curl("-x", f"socks5h://127.0.0.1:{port}", origin.url4("/echo"))
        assert none.returncode != 0
        time.sleep(0.2)
        assert "Secret-Pw" not in proxy.output() and "wrong" not in proxy.output()
    with proxy_process(
        "--socks", "0.0.0.0:0", "--http", "off", "--auth-file", str(users), *EMBEDDED,
        "--allow-host-access",
    ) as proxy:  # fmt: skip
        assert proxy.socks is not None
        good = curl(
            "-x", f"socks5h://alice:Secret-Pw@127.0.0.1:{proxy.socks[1]}", origin.url4("/echo")
        )
        assert echo(good)["path_qs"] == "/echo"


def test_max_connections_refuses_beyond_the_limit(origin: Origin) -> None:
    import socket

    with proxy_process(*EMBEDDED, "--max-connections", "1") as proxy:
        assert proxy.socks is not None
        held = socket.create_connection(proxy.socks, timeout=5)  # takes the only slot
        try:
            held.sendall(b"\x05\x01\x00")
            assert held.recv(2) == b"\x05\x00"
            result = curl(
                "-x", proxy.http_url, "-o", "/dev/null", "-w", "%{http_code}", origin.url4("/echo")
            )
            assert result.stdout == "503"
        finally:
            held.close()
        time.sleep(0.3)
        echo(curl("-x", proxy.http_url, origin.url4("/echo")))  # the slot is free again


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--egress", "sideways"], "--egress"),
        (["--socks", "nowhere:1"], "--socks"),
        (["--nat64-prefix", "2001:db8::/33"], "--nat64-prefix"),
        (["--workers", "0"], "--workers"),
        (["--bogus-flag"], "--bogus-flag"),
    ],
)
def test_bad_flag_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = run_proxy64(["serve", *args], timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_bad_config_value_is_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text('egress = "nat46"\n')
    result = run_proxy64(["serve", "--config", str(config)], timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "config key 'egress'" in lines[0] and "auto, nat64, embedded" in lines[0]
    config.write_text('egres = "nat64"\n')
    result = run_proxy64(["serve", "--config", str(config)], timeout=20)
    assert result.returncode == 2 and "unknown key" in result.stderr


def test_config_file_is_used_and_cli_overrides_it(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text(f'egress = "embedded"\nnat64_prefix = "{NSP}"\nhttp = "off"\n')
    with proxy_process("--config", str(config), "--http", "127.0.0.1:0") as proxy:
        assert proxy.prefix == NSP and proxy.egress == "embedded"
        assert proxy.http is not None  # the command line won over http = "off"


def test_port_in_use_is_one_line_exit_2() -> None:
    with proxy_process(*EMBEDDED) as first:
        assert first.socks is not None
        result = run_proxy64(
            ["serve", "--socks", f"127.0.0.1:{first.socks[1]}", "--http", "off", *EMBEDDED]
        )
    assert result.returncode == 2
    assert "already in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sigterm_and_sigint_exit_cleanly(origin: Origin) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        proxy = start_proxy(*EMBEDDED)
        try:
            echo(curl("-x", proxy.http_url, origin.url4("/echo")))
            assert proxy.stop(sig) == 0
            assert "Traceback" not in proxy.output()
        finally:
            proxy.stop(signal.SIGKILL)
            proxy.log_path.unlink(missing_ok=True)


def test_workers_share_the_listeners(origin: Origin) -> None:
    with proxy_process(*EMBEDDED, "--workers", "2") as proxy:
        assert proxy.startup_line.endswith("; 2 workers")
        for _ in range(6):
            echo(curl("-x", proxy.http_url, origin.url4("/echo")))
        pids = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(proxy.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(pids) == 2  # two workers; the parent supervises and accepts nothing
        assert proxy.stop() == 0
    for pid in pids:
        assert subprocess.run(["kill", "-0", pid], capture_output=True, check=False).returncode


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.02)


def test_sigterm_right_after_the_startup_line_exits_cleanly() -> None:
    for _ in range(3):
        proxy = start_proxy(*EMBEDDED)
        try:
            assert proxy.stop(signal.SIGTERM) == 0, proxy.output()
        finally:
            proxy.stop(signal.SIGKILL)
            proxy.log_path.unlink(missing_ok=True)


def test_a_second_stop_signal_closes_draining_tunnels_at_once(tmp_path: Path) -> None:
    """The first SIGINT closes the listener and leaves a live tunnel its shutdown_grace
    (30 s here); a second one (Ctrl-C pressed again) closes it now: exit 0, no traceback."""
    config = tmp_path / "p.toml"
    config.write_text("shutdown_grace = 30\n")
    origin = socket.create_server(("127.0.0.1", 0))  # never accepts: the tunnel stays open
    with origin, proxy_process(*EMBEDDED, "--http", "off", "--config", str(config)) as proxy:
        assert proxy.socks is not None
        with socket.create_connection(proxy.socks, timeout=10) as tunnel:
            socks5_client.connect(tunnel, "127.0.0.1", origin.getsockname()[1])
            os.kill(proxy.pid, signal.SIGINT)
            wait_until(lambda: "SIGINT: closing listeners" in proxy.output(), 10.0)
            time.sleep(0.3)
            assert proxy.process.poll() is None, "the tunnel was not given its grace"
            started = time.monotonic()
            assert proxy.stop(signal.SIGINT) == 0
            assert time.monotonic() - started < 5
            assert tunnel.recv(1) == b""  # closed by the proxy
        log = proxy.output()
        assert "SIGINT again: closing every tunnel now" in log
        assert "Traceback" not in log
