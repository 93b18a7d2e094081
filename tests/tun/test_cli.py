"""`proxy64 tun run` as a user runs it: exit status, report, teardown, errors, rootless."""

from __future__ import annotations

import glob
import importlib
import json
import os
import pkgutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

import proxy64
from proxy64.cli import main as cli_main
from proxy64.config import HostPort
from proxy64.fd_limit import tun_need
from proxy64.tun.device import TUN_PATH
from tests.helpers.fds import (
    LIMITS_OF_CMD_AND_PARENT,
    SHELL_SOFT,
    cmd_and_parent_limits,
    from_a_shells_limit,
)
from tests.helpers.requirements import require_root, require_tool

pytestmark = pytest.mark.network

NOBODY = 65534


def tun_run(*args: str, dns: HostPort | None = None) -> subprocess.CompletedProcess[str]:
    options = ["--nat64-prefix", "2001:db8:64::/96", "--egress", "embedded"]
    if dns is not None:
        options += ["--dns", str(dns)]
    return subprocess.run(
        [sys.executable, "-m", "proxy64", "tun", "run", *options, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def test_exit_status_report_and_teardown(nsd: HostPort, tmp_path: Path) -> None:
    resolv_before = set(glob.glob("/tmp/proxy64-resolv-*"))
    children_before = children_of(os.getpid())  # the NSD fixture
    report = tmp_path / "report.json"
    done = tun_run("--report", str(report), "--", "sh", "-c",
                   "ip -6 route show default; exit 7", dns=nsd)  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert json.loads(report.read_text())["destinations"] == []
    assert "default via fd64::1 dev p64tun0" in done.stdout
    assert "proxy64 readiness report" in done.stderr
    assert set(glob.glob("/tmp/proxy64-resolv-*")) == resolv_before  # temp file removed
    assert children_of(os.getpid()) == children_before  # nothing of ours left running


def test_proxy64_raises_its_own_open_files_limit_and_the_command_keeps_its_own(
    nsd: HostPort,
) -> None:
    """Started from a shell's 1024 open files: proxy64 raises its soft limit for its flows
    (TUN_MAX_FLOWS + FDS_RESERVED, within the hard limit), CMD still runs with 1024."""
    prlimit, expected = from_a_shells_limit(tun_need().wanted)
    done = subprocess.run(
        [*prlimit, sys.executable, "-m", "proxy64", "tun", "run", "--nat64-prefix",
         "2001:db8:64::/96", "--egress", "embedded", "--dns", str(nsd), "--",
         *LIMITS_OF_CMD_AND_PARENT],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert cmd_and_parent_limits(done.stdout) == (SHELL_SOFT, expected)
    assert "open files limit" not in done.stderr


def test_signal_death_is_128_plus_n(nsd: HostPort) -> None:
    done = tun_run("--", "sh", "-c", "kill -TERM $$", dns=nsd)
    assert done.returncode == 128 + 15


def test_mtu_and_ipv4_options_shape_the_sandbox(nsd: HostPort) -> None:
    done = tun_run("--mtu", "1500", "--ipv4", "--", "sh", "-c",
                   "ip -o link show p64tun0; ip -4 -o addr show p64tun0", dns=nsd)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mtu 1500" in done.stdout
    assert "10.64.0.2/24" in done.stdout


def test_command_not_found_is_127(nsd: HostPort) -> None:
    done = tun_run("--", "/nonexistent/p64-no-such-command", dns=nsd)
    assert done.returncode == 127
    assert "command not found" in done.stderr


def test_bad_mtu_is_a_usage_error() -> None:
    done = tun_run("--mtu", "100", "--", "true")
    assert done.returncode == 2
    assert "--mtu" in done.stderr and "1280-65520" in done.stderr


def test_no_command_is_a_usage_error() -> None:
    done = tun_run()
    assert done.returncode == 2
    assert "no command given" in done.stderr


def _as_nobody(argv: list[str]) -> tuple[int, str]:
    """Run proxy64's CLI in a forked child that dropped to uid/gid nobody."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 99
        try:
            os.dup2(write, 2)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            # nobody may not read the interpreter's library (it can live under /root):
            # every proxy64 module, and what it imports, is loaded while still root.
            for module in pkgutil.walk_packages(proxy64.__path__, "proxy64."):
                if not module.name.endswith(".__main__"):
                    importlib.import_module(module.name)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            from proxy64.cli import main

            code = main(argv)
        except BaseException:
            traceback.print_exc()  # the test shows why, not only "status 99"
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


def test_rootless_without_tun_permission_says_how_to_fix() -> None:
    require_root()  # to become nobody
    mode = stat.S_IMODE(os.stat(TUN_PATH).st_mode)
    if mode & 0o006 == 0o006:
        pytest.skip(f"{TUN_PATH} is mode {mode:o} here: the rootless error cannot happen")
    code, text = _as_nobody(["tun", "run", "--nat64-prefix", "2001:db8:64::/96", "--",
                             "true"])  # fmt: skip
    assert code == 2
    assert "chmod 0666 /dev/net/tun" in text and "udev rule" in text
    assert "unprivileged user namespace cannot open it" in text


def test_rootless_success_path() -> None:
    require_root()
    require_tool("curl")
    mode = stat.S_IMODE(os.stat(TUN_PATH).st_mode)
    if mode & 0o006 != 0o006:
        pytest.skip(
            f"{TUN_PATH} is mode {mode:o} on this machine, so no unprivileged user can open "
            "it; the rootless success path needs mode 0666 (see docs/tun.md)"
        )
    # tun run starts its sandbox as `sys.executable -m proxy64.tun.child`: nobody must be
    # able to run this interpreter and import proxy64 from here (not so when Python or the
    # source tree lives under a directory only root may enter, such as /root)
    try:
        premise = subprocess.run(
            [sys.executable, "-c", "import proxy64.tun.child"],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        why = (premise.stderr.strip().splitlines() or [f"status {premise.returncode}"])[-1]
    except OSError as exc:
        premise, why = None, f"{exc.filename}: {exc.strerror}"
    if premise is None or premise.returncode != 0:
        pytest.skip(
            f"user nobody cannot run {sys.executable} -c 'import proxy64.tun.child' from "
            f"{os.getcwd()} ({why}), and the rootless sandbox is that interpreter run as "
            "that user"
        )
    code, text = _as_nobody(["tun", "run", "--nat64-prefix", "2001:db8:64::/96", "--",
                             "ip", "-6", "addr"])  # fmt: skip
    assert code == 0, text


def test_sandbox_interpreter_that_cannot_be_executed_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sandbox is `sys.executable -m proxy64.tun.child`; when exec fails (here: a file
    without an execute bit, which not even root may run) the error names the file."""
    require_root()  # else check_rootless may stop it first, on a mode-0600 /dev/net/tun
    interpreter = tmp_path / "python3"
    interpreter.write_text("")
    interpreter.chmod(0o644)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    assert cli_main(["tun", "run", "--nat64-prefix", "2001:db8:64::/96", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert f"cannot start the sandbox process {str(interpreter)!r}: Permission denied" in err
    assert "must be able to execute that Python interpreter" in err


def test_sandbox_that_dies_before_its_first_word_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sandbox process that exits before child.py runs (an interpreter that cannot
    import proxy64 as that user) is reported with its status, not as an empty error."""
    require_root()
    interpreter = tmp_path / "python3"
    interpreter.write_text('#!/bin/sh\necho "No module named proxy64" >&2\nexit 1\n')
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    assert cli_main(["tun", "run", "--nat64-prefix", "2001:db8:64::/96", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert (
        f"the sandbox process ({interpreter} -m proxy64.tun.child, uid 0) exited with "
        "status 1 before creating its TUN device" in err
    )


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def state(pid: int) -> str:
    """The process state letter ("Z": a zombie), "" when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def start_sleeping_sandbox(nsd: HostPort) -> tuple[subprocess.Popen[bytes], int]:
    """proxy64 tun run -- sleep 30, returned once `sleep` runs; (proxy64, sandbox pid)."""
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy64", "tun", "run", "--nat64-prefix", "2001:db8:64::/96",
         "--egress", "embedded", "--dns", str(nsd), "--", "sleep", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        children = children_of(proxy.pid)
        if children and all(comm(pid) == "sleep" for pid in children):
            (sandbox,) = children
            return proxy, sandbox
        if time.monotonic() > deadline:
            proxy.kill()
            proxy.wait()
            raise AssertionError("the sandbox never started")
        time.sleep(0.05)


def test_sigterm_to_proxy64_reaches_the_command_and_nothing_is_left(nsd: HostPort) -> None:
    proxy, sandbox = start_sleeping_sandbox(nsd)
    try:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=20)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    assert proxy.returncode == 128 + signal.SIGTERM  # CMD's status: killed by SIGTERM
    assert state(sandbox) == ""  # reaped by proxy64


def test_killed_proxy64_takes_the_command_with_it(nsd: HostPort) -> None:
    resolv_before = set(glob.glob("/tmp/proxy64-resolv-*"))
    proxy, sandbox = start_sleeping_sandbox(nsd)
    try:
        proxy.send_signal(signal.SIGKILL)  # no clean-up code of proxy64 runs
        proxy.wait(timeout=10)
        deadline = time.monotonic() + 5
        while state(sandbox) not in ("", "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    assert state(sandbox) in ("", "Z")  # PR_SET_PDEATHSIG: CMD died with proxy64
    assert set(glob.glob("/tmp/proxy64-resolv-*")) <= resolv_before  # no file left


@pytest.mark.slow
def test_command_outlives_trio_worker_threads(nsd: HostPort) -> None:
    # Regression: PR_SET_PDEATHSIG follows the *thread* that forked the sandbox; trio's
    # idle worker threads exit after 10 s, which once killed every CMD at that age.
    done = tun_run("--", "sh", "-c", "sleep 11; echo survived", dns=nsd)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "survived\n"
