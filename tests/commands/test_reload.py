"""SIGHUP reload end to end: a transfer through a tunnel crosses a SIGHUP that changes the
auth file and arrives intact (sha256); new connections see the new users; a broken auth
file or config leaves the old settings in force with one line naming the file and the
problem; with --workers 2 the supervisor checks the files once and passes the reload on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.helpers.aiohttp_origin import Origin
from tests.helpers.curl import curl
from tests.helpers.downloads import finish_download, start_download
from tests.helpers.proxy_process import (
    EMBEDDED,
    ProxyProcess,
    children,
    http_url_as,
    proxy_process,
    socks_url_as,
    wait_for_log,
)


def works(proxy: ProxyProcess, origin: Origin, user: str, password: str) -> bool:
    """SOCKS5 and HTTP both let this user through (several connections: every worker)."""
    results = []
    for _ in range(3):
        for url in (socks_url_as(proxy, user, password), http_url_as(proxy, user, password)):
            done = curl("-o", "/dev/null", "-f", "-x", url, origin.url4("/bytes/100"))
            results.append(done.returncode == 0)
    assert len(set(results)) == 1, f"workers disagree about {user}: {results}"
    return results[0]


def test_sighup_swaps_the_auth_file_without_cutting_a_tunnel(
    origin: Origin, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text("alice:one\n", encoding="utf-8")
    with proxy_process(*EMBEDDED, "--auth-file", str(users)) as proxy:
        assert works(proxy, origin, "alice", "one")
        target = tmp_path / "download"
        download = start_download(proxy, origin, target)
        time.sleep(1.0)
        assert download.poll() is None, "the download must still be running at the SIGHUP"
        users.write_text("# alice is gone\nbob:two\n", encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        assert wait_for_log(proxy, "SIGHUP: settings reloaded (1 user)")
        assert download.poll() is None
        assert works(proxy, origin, "bob", "two")  # new connections: the new users
        assert not works(proxy, origin, "alice", "one")
        # a broken file: one line naming the file, the line and the problem; bob stays
        users.write_text("bob:two\nno colon here\n", encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        failed = wait_for_log(proxy, "the previous settings stay in force")
        assert len(failed) == 1, proxy.output()
        assert f"{users}: line 2 is not user:password" in failed[0]
        assert "no colon here" not in proxy.output()  # a credentials line is never echoed
        assert works(proxy, origin, "bob", "two")
        finish_download(download, target)  # alice's tunnel outlived both reloads
        assert proxy.process.poll() is None


def test_sighup_with_workers_reloads_every_worker_once(origin: Origin, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:one\n", encoding="utf-8")
    config = tmp_path / "proxy64.toml"
    config.write_text('auth_file = "users"\nidle_timeout = 300\n', encoding="utf-8")
    with proxy_process(*EMBEDDED, "--config", str(config), "--workers", "2") as proxy:
        assert works(proxy, origin, "alice", "one")
        workers = children(proxy.pid)
        target = tmp_path / "download"
        download = start_download(proxy, origin, target)
        time.sleep(1.0)
        users.write_text("carol:three\n", encoding="utf-8")
        config.write_text('auth_file = "users"\nidle_timeout = 60\n', encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        assert wait_for_log(proxy, "SIGHUP: settings reloaded")
        changed = wait_for_log(proxy, "SIGHUP: idle_timeout changed")
        assert len(changed) == 1  # said once, by the supervisor
        assert works(proxy, origin, "carol", "three")
        assert not works(proxy, origin, "alice", "one")
        # a broken config: one line with the file and the TOML line; carol stays
        config.write_text('auth_file = "users"\nidle_timeout = = 5\n', encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        failed = wait_for_log(proxy, "the previous settings stay in force")
        time.sleep(0.5)
        assert len(wait_for_log(proxy, "the previous settings stay in force")) == 1
        assert f"{config}: not valid TOML" in failed[0] and "line 2" in failed[0]
        assert works(proxy, origin, "carol", "three")
        # a worker started after the reload starts with the reloaded users
        os.kill(min(workers), signal.SIGKILL)
        assert wait_for_log(proxy, "restarting it in")
        time.sleep(1.0)
        assert works(proxy, origin, "carol", "three")
        finish_download(download, target)
        assert children(proxy.pid) - workers  # the replacement runs


def test_reload_cannot_turn_authentication_off(origin: Origin, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:one\n", encoding="utf-8")
    config = tmp_path / "proxy64.toml"
    config.write_text('auth_file = "users"\n', encoding="utf-8")
    with proxy_process(*EMBEDDED, "--config", str(config)) as proxy:
        config.write_text("", encoding="utf-8")
        os.kill(proxy.pid, signal.SIGHUP)
        (failed,) = wait_for_log(proxy, "the previous settings stay in force")
        assert "cannot turn authentication on or off" in failed
        assert works(proxy, origin, "alice", "one")
        assert not works(proxy, origin, "nobody", "x")
