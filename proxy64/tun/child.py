"""The sandbox side of `proxy64 tun run`: enter new namespaces, make the TUN, exec CMD.

Run as `python -m proxy64.tun.child --sock FD ... -- CMD ARGS` by namespace.py. Steps:
unshare (net + mount, plus user when rootless), private mounts, bind the private
resolv.conf over /etc/resolv.conf, open /dev/net/tun, configure addresses and routes
with iproute2, pass the TUN fd to the parent (SCM_RIGHTS), wait for "go", exec CMD.
On any failure one line "error: ..." goes over the socket and the exit status is 2, so
the parent prints the reason; exec failures exit 127 (not found) or 126 like a shell.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from proxy64.tun.device import TunSetupError, open_tun

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise TunSetupError(f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source else None
    _check(_libc.mount(src, target.encode(), None, ctypes.c_ulong(flags), None), f"mount {target}")


def enter_namespaces(rootless: bool) -> None:
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET | CLONE_NEWNS | (CLONE_NEWUSER if rootless else 0)
    try:
        unshare(flags)
    except TunSetupError as exc:
        how = "user namespaces may be disabled (kernel.unprivileged_userns_clone)"
        raise TunSetupError(
            f"cannot create namespaces ({exc}); {how}"
            if rootless
            else f"cannot create namespaces ({exc})"
        ) from None
    if rootless:
        # user_namespaces(7): deny setgroups before writing gid_map as an unprivileged user.
        for path, text in (
            ("/proc/self/setgroups", "deny"),
            ("/proc/self/uid_map", f"0 {uid} 1"),
            ("/proc/self/gid_map", f"0 {gid} 1"),
        ):
            with open(path, "w") as f:
                f.write(text)


def private_resolv_conf(path: str) -> None:
    """Bind the private resolv.conf over /etc/resolv.conf in this mount namespace only."""
    mount(None, "/", MS_REC | MS_PRIVATE)
    target = os.path.realpath("/etc/resolv.conf")
    if not os.path.exists(target):
        target = "/etc/resolv.conf"
        open(target, "a").close()
    mount(path, target, MS_BIND)


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TunSetupError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def sysctl(path: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except OSError:
        pass  # best effort: the setting only avoids noise (DAD, router solicitations)


def configure(
    name: str,
    mtu: int,
    addr6: str,
    gw6: str,
    *,
    addr4: str | None,
    gw4: str | None,
    hidden4: str | None = None,
) -> None:
    ip("link", "set", "lo", "up")
    for key, value in (("accept_dad", "0"), ("accept_ra", "0"), ("router_solicitations", "0")):
        sysctl(f"net/ipv6/conf/{name}/{key}", value)
    ip("link", "set", name, "addrgenmode", "none")  # no link-local: no MLD/RS noise
    ip("link", "set", name, "mtu", str(mtu), "up")
    ip("-6", "addr", "add", addr6, "dev", name, "nodad")
    ip("-6", "route", "add", "default", "via", gw6, "dev", name, "mtu", str(mtu))
    if addr4 and gw4:
        ip("addr", "add", addr4, "dev", name)
        ip("route", "add", "default", "via", gw4, "dev", name, "onlink")
    elif hidden4:
        # A local route, not an address: AF_INET sockets get a source and a way into the
        # TUN, while getaddrinfo(AI_ADDRCONFIG) still sees an IPv6-only host.
        ip("route", "add", "local", hidden4, "dev", "lo", "table", "local")
        ip("route", "add", "default", "dev", name, "src", hidden4)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy64.tun.child")
    parser.add_argument("--sock", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--mtu", type=int, required=True)
    parser.add_argument("--addr6", required=True)
    parser.add_argument("--gw6", required=True)
    parser.add_argument("--addr4")
    parser.add_argument("--gw4")
    parser.add_argument("--hidden4")
    parser.add_argument("--resolv", required=True)
    parser.add_argument("--rootless", action="store_true")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    sock = socket.socket(fileno=args.sock)
    try:
        enter_namespaces(args.rootless)
        private_resolv_conf(args.resolv)
        fd, _ = open_tun(args.name)
        configure(args.name, args.mtu, args.addr6, args.gw6, addr4=args.addr4, gw4=args.gw4,
                  hidden4=args.hidden4)  # fmt: skip
    except (TunSetupError, OSError) as exc:
        sock.sendall(f"error: {exc}".encode())
        return 2
    # PR_SET_PDEATHSIG (prctl(2)): if proxy64 dies, CMD dies too, never left without network.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    socket.send_fds(sock, [b"ok"], [fd])
    os.close(fd)
    if sock.recv(1) != b"g":
        return 2  # the parent gave up
    sock.close()
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError:
        sys.stderr.write(f"proxy64 tun run: {cmd[0]}: command not found\n")
        return 127
    except OSError as exc:
        sys.stderr.write(f"proxy64 tun run: {cmd[0]}: {exc.strerror}\n")
        return 126


if __name__ == "__main__":
    sys.exit(main())
