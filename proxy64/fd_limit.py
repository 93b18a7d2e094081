"""The open-files limit of a long-running process: `serve` and the TUN modes raise their
soft RLIMIT_NOFILE so that their own connection limits, not a login shell's 1024, bound
what they hold.

A shell's soft limit is 1024 on most Linux systems while the hard limit is far higher
(systemd: 524288); a proxy that keeps the soft one stops accepting at ~500 tunnels. Like
other servers, proxy64 raises the soft limit, only as far as its connections can use
(never lowers it, never above the hard limit), and says so when even the hard limit is
too low for them.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from proxy64.defaults import FDS_PER_CONNECTION, FDS_RESERVED, TUN_MAX_FLOWS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FdNeed:
    """`count` connections (or flows: `units`) using up to `most` fds each and at least
    `least`; `what` names the count for a person, `remedy` says what else to lower."""

    count: int
    most: int
    least: int
    what: str
    units: str = "connections"
    remedy: str = ""

    @property
    def wanted(self) -> int:
        return self.count * self.most + FDS_RESERVED

    @property
    def needed(self) -> int:
        return self.count * self.least + FDS_RESERVED


def serve_need(max_connections: int) -> FdNeed:
    """A proxy connection: two sockets, and a splice pipe (two fds) each way while bulk
    flows; without the pipes it copies instead, without the sockets it cannot exist."""
    return FdNeed(
        max_connections,
        FDS_PER_CONNECTION,
        2,
        f"--max-connections {max_connections}",
        remedy=" or lower --max-connections",
    )


def tun_need() -> FdNeed:
    """A TUN flow: the one socket toward its destination (the app's side is packets)."""
    return FdNeed(TUN_MAX_FLOWS, 1, 1, f"{TUN_MAX_FLOWS} TUN flows (TUN_MAX_FLOWS)", "flows")


@dataclass(frozen=True, slots=True)
class NofileChoice:
    """The soft limit to set and, when the hard limit leaves connections waiting, why."""

    soft: int
    warning: str | None = None


def choose_nofile(soft: int, hard: int, need: FdNeed) -> NofileChoice:
    """The soft limit for `need` (pure): what it can use, within the hard limit
    (RLIM_INFINITY: none), never below the soft limit already in force."""
    reachable = need.wanted if hard == resource.RLIM_INFINITY else min(need.wanted, hard)
    new = max(soft, reachable)
    if new >= need.needed:
        return NofileChoice(new)
    fits = max(0, (new - FDS_RESERVED) // need.least)
    return NofileChoice(
        new,
        f"open files limit {new} is below the {need.needed} that {need.what} needs: past "
        f"about {fits} {need.units} new ones wait for a free fd; raise the hard limit "
        f"(ulimit -Hn, LimitNOFILE= in a systemd unit){need.remedy}",
    )


def raise_nofile_limit(need: FdNeed) -> NofileChoice:
    """Set this process's soft RLIMIT_NOFILE to choose_nofile's (processes forked later
    inherit it; a kernel that refuses, above fs.nr_open, keeps the old one) and log the
    warning when even that is too low for `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    choice = choose_nofile(soft, hard, need)
    if choice.soft != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (choice.soft, hard))
        except (ValueError, OSError):
            choice = choose_nofile(soft, soft, need)
    if choice.warning is not None:
        logger.warning("%s", choice.warning)
    return choice
