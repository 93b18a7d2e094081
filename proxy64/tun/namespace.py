"""Run one command in a fresh network namespace whose only network is a proxy64 TUN.

The child (proxy64/tun/child.py) unshares, opens the TUN inside its namespace and
passes the fd back over a socketpair (SCM_RIGHTS); proxy64 keeps running in the
original namespace, so its dials use the host's network. Invariants: the child is
reaped and the TUN fd closed on every exit path; the private resolv.conf is a temp
file removed at the end; CMD's exit status is returned (128+N for a signal N).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

import trio

from proxy64.defaults import (
    TUN_CLIENT,
    TUN_CLIENT_V4,
    TUN_DEVICE_NAME,
    TUN_GATEWAY,
    TUN_GATEWAY_V4,
    TUN_HIDDEN_V4_SOURCE,
    TUN_MTU,
    TUN_NETWORK,
    TUN_NETWORK_V4,
)
from proxy64.tun.device import ROOTLESS_FIX, TUN_PATH, TunDevice, TunSetupError

SETUP_TIMEOUT = 10.0
CLIENT6 = IPv6Interface(f"{TUN_CLIENT}/{TUN_NETWORK.split('/')[1]}")
GATEWAY6 = IPv6Address(TUN_GATEWAY)
CLIENT4 = IPv4Interface(f"{TUN_CLIENT_V4}/{TUN_NETWORK_V4.split('/')[1]}")
GATEWAY4 = IPv4Address(TUN_GATEWAY_V4)
HIDDEN4 = IPv4Address(TUN_HIDDEN_V4_SOURCE)


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    mtu: int = TUN_MTU
    name: str = TUN_DEVICE_NAME
    client6: IPv6Interface = CLIENT6
    gateway6: IPv6Address = GATEWAY6
    ipv4: bool = False
    client4: IPv4Interface = CLIENT4
    gateway4: IPv4Address = GATEWAY4
    # without ipv4: the local source of AF_INET sockets (their packets reach the TUN and
    # the report); None: no IPv4 route at all (connect fails in the kernel, unseen)
    hidden4: IPv4Address | None = HIDDEN4


async def _forward_signals(
    signals: AsyncIterator[int], process: subprocess.Popen[bytes], scope: trio.CancelScope
) -> None:
    """SIGTERM/SIGHUP to proxy64 go to CMD; CMD's exit then ends the run (SIGINT comes
    from the terminal to both already)."""
    with scope:
        async for signum in signals:
            process.send_signal(signum)


async def _wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for the child without a thread: its pidfd becomes readable when it exits."""
    pidfd = os.pidfd_open(process.pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
    return process.wait()


def check_rootless() -> None:
    """Fail early, with the fix, when a normal user cannot open /dev/net/tun."""
    if os.geteuid() != 0 and not os.access(TUN_PATH, os.R_OK | os.W_OK):
        raise TunSetupError(ROOTLESS_FIX)


def cannot_start_child(exc: OSError) -> str:
    """Why the sandbox process could not be started (exec of the interpreter failed)."""
    return (
        f"cannot start the sandbox process {sys.executable!r}: {exc.strerror}; the user "
        f"running proxy64 (uid {os.geteuid()}) must be able to execute that Python "
        "interpreter and read every directory on its path"
    )


def child_died_silently(returncode: int | None) -> str:
    """Why the sandbox process ended without a word over the socket: it never ran
    child.py's code (the interpreter could not import proxy64, or a signal killed it)."""
    if returncode is None:
        how = "stopped answering"
    elif returncode < 0:
        how = f"was killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exited with status {returncode}"
    return (
        f"the sandbox process ({sys.executable} -m proxy64.tun.child, uid {os.geteuid()}) "
        f"{how} before creating its TUN device; Python's own message, if any, is above "
        "(proxy64's source must be readable by this user)"
    )


def resolv_conf_text(settings: SandboxSettings) -> str:
    lines = ["# written by proxy64 tun run: the DNS64 responder on the TUN", ""]
    lines[1] = f"nameserver {settings.gateway6}"
    return "\n".join(lines) + "\noptions edns0\n"


async def run_in_namespace(
    cmd: Sequence[str],
    settings: SandboxSettings,
    serve: Callable[[TunDevice, trio.Event], Awaitable[None]],
    *,
    stdout: int | None = None,
) -> int:
    """Start CMD in the sandbox, run serve(device, done) beside it, return CMD's status.

    serve must return soon after `done` is set (it is set when CMD has exited). stdout:
    a file descriptor for CMD's standard output (default: inherited)."""
    check_rootless()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd, resolv_path = tempfile.mkstemp(prefix="proxy64-resolv-", suffix=".conf")
    device: TunDevice | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        os.write(fd, resolv_conf_text(settings).encode())
        os.close(fd)
        os.chmod(resolv_path, 0o644)
        argv = [
            sys.executable, "-m", "proxy64.tun.child",
            "--sock", str(child.fileno()), "--name", settings.name,
            "--mtu", str(settings.mtu), "--addr6", str(settings.client6),
            "--gw6", str(settings.gateway6), "--resolv", resolv_path,
        ]  # fmt: skip
        if settings.ipv4:
            argv += ["--addr4", str(settings.client4), "--gw4", str(settings.gateway4)]
        elif settings.hidden4 is not None:
            argv += ["--hidden4", str(settings.hidden4)]
        if os.geteuid() != 0:
            argv.append("--rootless")
        argv += ["--", *cmd]
        # Started from this (trio's) thread, not a worker thread: the child's
        # PR_SET_PDEATHSIG fires when the thread that forked it ends (prctl(2)).
        try:
            process = subprocess.Popen(argv, pass_fds=(child.fileno(),), stdout=stdout)  # noqa: ASYNC220
        except OSError as exc:
            raise TunSetupError(cannot_start_child(exc)) from None
        child.close()
        with trio.fail_after(SETUP_TIMEOUT):
            await trio.lowlevel.wait_readable(parent)
            message, fds, _flags, _addr = socket.recv_fds(parent, 4096, 1)
        if not fds:
            text = message.decode(errors="replace").removeprefix("error: ").strip()
            if not text:
                with trio.move_on_after(SETUP_TIMEOUT):
                    await _wait(process)  # the socket closed: the child is exiting
                text = child_died_silently(process.returncode)
            raise TunSetupError(text)
        device = TunDevice(fds[0], settings.mtu, vnet=True)  # child.py opens it with vnet
        # The child bind-mounted the file already (the mount keeps it alive): remove the
        # name now, so not even a SIGKILL of proxy64 leaves a file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(resolv_path)
        done = trio.Event()
        status = 0
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, device, done)
                forwarding = trio.CancelScope()
                nursery.start_soon(_forward_signals, signals, process, forwarding)
                parent.sendall(b"g")
                status = await _wait(process)
                forwarding.cancel()
                done.set()
        return 128 - status if status < 0 else status
    except trio.TooSlowError:
        raise TunSetupError("the sandbox did not set up its TUN device within 10 s") from None
    finally:
        parent.close()
        child.close()
        if device is not None:
            device.close()
        if process is not None and process.returncode is None:
            process.kill()
            process.wait()  # SIGKILL: immediate
        with contextlib.suppress(FileNotFoundError):
            os.unlink(resolv_path)
