"""Access rules end to end with curl against a loopback origin: SOCKS5 reply 2 (curl exit
97), HTTP 403 for CONNECT and forwarding, the log line naming the rule and the reply not;
name suffix, port and client rules; command-line rules before the config file's; a
SIGHUP that changes the rules under a running tunnel (sha256 intact, new connections see
the new rules, a broken [[rule]] keeps the old ones with one line naming file and line).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.aiohttp_origin import Origin, running_origin
from tests.helpers.curl import curl
from tests.helpers.downloads import finish_download, start_download
from tests.helpers.proxy_process import ProxyProcess, proxy_process, wait_for_log

EMBEDDED = ("--egress", "embedded", "--nat64-prefix", "2001:db8:64::/96")
REFUSED = "is not allowed by this proxy's access rules"


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as server:
        yield server


def socks(proxy: ProxyProcess, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return curl("-o", "/dev/null", *extra, "-x", proxy.socks_url, url)


def http(proxy: ProxyProcess, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return curl("-w", "%{http_code}", *extra, "-x", proxy.http_url, url)


def assert_socks_refused(result: subprocess.CompletedProcess[str]) -> None:
    """curl's exit 97 (proxy handshake failed) with reply 2, not allowed by ruleset."""
    assert result.returncode == 97 and "(2)" in result.stderr, result.stderr


def assert_http_refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.stdout.endswith("403"), (result.stdout, result.stderr)
    body = result.stdout[:-3]
    assert REFUSED in body and "rule " not in body and "--deny" not in body


def test_deny_by_cidr_and_port_through_socks5_and_http(origin: Origin) -> None:
    port = origin.port4
    with proxy_process(*EMBEDDED, "--deny", f"127.0.0.0/8 ports={port}") as proxy:
        url = origin.url4("/echo")
        assert_socks_refused(socks(proxy, url))
        assert_http_refused(http(proxy, url))  # forwarding
        tunnel = curl("-p", "-o", "/dev/null", "-x", proxy.http_url, url)  # CONNECT
        assert tunnel.returncode == 56 and "403" in tunnel.stderr, tunnel.stderr
        time.sleep(0.2)
        denied = [ln for ln in proxy.output().splitlines() if "denied by rule" in ln]
        assert len(denied) == 3, proxy.output()
        assert all(f"denied by rule 1 (deny dest 127.0.0.0/8 ports {port}, --deny)" in ln
                   for ln in denied)  # fmt: skip
        # ::1 is another address, the same port: no rule matches, allowed
        assert socks(proxy, origin.url6("/echo")).returncode == 0


def test_name_suffix_client_and_order(origin: Origin, tmp_path: Path) -> None:
    port = origin.port4
    config = tmp_path / "proxy64.toml"
    config.write_text(
        f'[[rule]]\naction = "deny"\nports = "{port}"\n',  # the file's rule comes last
        encoding="utf-8",
    )
    with proxy_process(
        *EMBEDDED,
        "--config", str(config),
        "--deny", ".localhost",
        "--allow", f"dest=127.0.0.1 client=127.0.0.2 ports={port}",
    ) as proxy:  # fmt: skip
        # a name rule on the requested name (localhost and its subdomains: RFC 6761 §6.3)
        for name in ("localhost", "app.localhost"):
            assert_socks_refused(socks(proxy, f"http://{name}:{port}/echo"))
        assert_http_refused(http(proxy, f"http://app.localhost:{port}/echo"))
        # the client rule: 127.0.0.2 may, 127.0.0.1 meets the file's deny
        allowed = socks(proxy, origin.url4("/echo"), "--interface", "127.0.0.2")
        assert allowed.returncode == 0, allowed.stderr
        assert_socks_refused(socks(proxy, origin.url4("/echo")))
        time.sleep(0.2)
        out = proxy.output()
        assert "denied by rule 1 (deny dest .localhost, --deny)" in out
        assert f"denied by rule 3 (deny ports {port}, {config} line 1)" in out


def test_sighup_changes_the_rules_under_a_running_tunnel(origin: Origin, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:one\n", encoding="utf-8")
    config = tmp_path / "proxy64.toml"
    config.write_text('auth_file = "users"\n', encoding="utf-8")
    deny = (
        '\n# the origin is closed for now\n[[rule]]\naction = "deny"\ndest = "127.0.0.1"\n'
        f'ports = "{origin.port4}"\n'
    )
    with proxy_process(*EMBEDDED, "--config", str(config)) as proxy:
        alice = ("-U", "alice:one")
        assert socks(proxy, origin.url4("/echo"), *alice).returncode == 0
        target = tmp_path / "download"
        download = start_download(proxy, origin, target)
        time.sleep(1.0)
        assert download.poll() is None, "the download must still be running at the SIGHUP"
        # one SIGHUP changes the rules and the auth file together
        users.write_text("alice:one\nbob:two\n", encoding="utf-8")
        config.write_text('auth_file = "users"\n' + deny, encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        assert wait_for_log(proxy, "SIGHUP: settings reloaded (2 users, 1 access rule)")
        assert download.poll() is None
        assert_socks_refused(socks(proxy, origin.url4("/echo"), "-U", "bob:two"))  # bob: known
        assert_socks_refused(socks(proxy, origin.url4("/echo"), *alice))  # new connections
        assert_http_refused(http(proxy, origin.url4("/echo"), "--proxy-user", "alice:one"))
        # a broken rule: one line naming the file and the line; the deny stays in force
        config.write_text(
            'auth_file = "users"\n' + deny + '\n[[rule]]\naction = "allow"\ndest = "10.0.0.0/33"\n',
            encoding="utf-8",
        )
        os.kill(proxy.pid, signal.SIGHUP)
        (failed,) = wait_for_log(proxy, "the previous settings stay in force")
        assert f"{config}: line 9: [[rule]]: dest '10.0.0.0/33' is not an address or CIDR" in failed
        assert_socks_refused(socks(proxy, origin.url4("/echo"), *alice))
        # the rules removed: new connections pass again
        config.write_text('auth_file = "users"\n', encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        assert len(wait_for_log(proxy, "SIGHUP: settings reloaded", count=2)) == 2
        assert socks(proxy, origin.url4("/echo"), *alice).returncode == 0
        finish_download(download, target)  # the tunnel outlived the three reloads
        assert proxy.process.poll() is None


def test_sighup_with_workers_gives_every_worker_the_new_rules(
    origin: Origin, tmp_path: Path
) -> None:
    config = tmp_path / "proxy64.toml"
    config.write_text("", encoding="utf-8")
    with proxy_process(*EMBEDDED, "--config", str(config), "--workers", "2") as proxy:
        url = origin.url4("/echo")
        assert all(socks(proxy, url).returncode == 0 for _ in range(4))
        config.write_text(
            f'[[rule]]\naction = "deny"\nports = "{origin.port4}"\n', encoding="utf-8"
        )
        os.kill(proxy.pid, signal.SIGHUP)
        assert wait_for_log(proxy, "SIGHUP: settings reloaded (1 access rule)")
        time.sleep(1.0)  # the supervisor passes SIGHUP on to the workers
        for _ in range(6):  # several connections: every worker answers some
            assert_socks_refused(socks(proxy, url))
