"""Where PREF64 (RFC 8781) reaches an unprivileged process on Linux.

1. rtnetlink: the kernel passes the ND options it does not handle itself, PREF64 among
   them, of every Router Advertisement it accepts to the multicast group
   RTNLGRP_ND_USEROPT, which any process may join (no capability needed). Only RAs that
   arrive after joining are seen; the kernel keeps no copy, and soliciting one (RS)
   needs a raw ICMPv6 socket, so root: not done. The interface must accept RAs
   (accept_ra=1 with forwarding off, or accept_ra=2).
2. systemd-networkd, which handles RAs itself (the kernel then sees none) and shows
   what it learned in `networkctl --json=short status` when UsePREF64=yes.
Parsing is in proxy64/proto/pref64.py.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from proxy64.defaults import NETWORKCTL_TIMEOUT
from proxy64.errors import PacketError
from proxy64.proto.pref64 import (
    RTNLGRP_ND_USEROPT,
    Announcement,
    Pref64,
    networkd_pref64,
    pref64_announcements,
)

log = logging.getLogger(__name__)

SOL_NETLINK = 270  # linux/socket.h
NETLINK_ADD_MEMBERSHIP = 1  # linux/netlink.h
_RECEIVE_BUFFER = 65536


def open_nduseropt_socket() -> socket.socket:
    """A non-blocking rtnetlink socket joined to RTNLGRP_ND_USEROPT; raises OSError."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        raise OSError(errno.EAFNOSUPPORT, "rtnetlink exists on Linux only")
    sock = socket.socket(family, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_ND_USEROPT)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def interface_name(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"interface {ifindex}"


async def listen_pref64(sock: socket.socket, heard: Callable[[str, Announcement], None]) -> None:
    """heard(interface, announcement) for each PREF64 option of each RA passed on; forever.

    A message that does not parse is logged and skipped. ENOBUFS (the kernel dropped
    messages because we were slow) is not fatal: later RAs still arrive.
    """
    tsock = trio.socket.from_stdlib_socket(sock)
    while True:
        try:
            datagram = await tsock.recv(_RECEIVE_BUFFER)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                log.debug("rtnetlink: the kernel dropped messages (ENOBUFS)")
                continue
            raise
        try:
            found = pref64_announcements(datagram)
        except PacketError as exc:
            log.debug("rtnetlink ND user option ignored: %s", exc)
            continue
        for announcement in found:
            heard(interface_name(announcement.ifindex), announcement)


# --- systemd-networkd ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkdResult:
    found: tuple[tuple[str, Pref64], ...]
    problem: str | None  # why nothing could be asked ("networkctl not found", ...)


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


async def networkd_status(
    command: str = "networkctl",
    *,
    timeout: float = NETWORKCTL_TIMEOUT,  # noqa: ASYNC109 (one bound for one command)
) -> NetworkdResult:
    """The PREF64 prefixes systemd-networkd learned, from `networkctl --json=short status`."""
    path = shutil.which(command)
    if path is None:
        return NetworkdResult((), f"{command} not found")
    with trio.move_on_after(timeout):
        try:
            done = await trio.run_process(
                [path, "--json=short", "--no-pager", "status"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=b"",
            )
        except OSError as exc:
            return NetworkdResult((), f"{command}: {exc.strerror or exc}")
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            reason = why[-1] if why else f"exit status {done.returncode}"
            return NetworkdResult((), f"{command}: {reason}")
        try:
            status = json.loads(done.stdout)
        except ValueError as exc:
            return NetworkdResult((), f"{command} printed no JSON ({exc})")
        return NetworkdResult(tuple(networkd_pref64(status, boottime())), None)
    return NetworkdResult((), f"{command} gave no answer within {timeout:g} s")
