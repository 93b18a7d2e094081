"""The open-files limit of a server process: `serve` raises its soft RLIMIT_NOFILE so that
--max-connections, not a login shell's 1024, is what bounds its connections.

A shell's soft limit is 1024 on most Linux systems while the hard limit is far higher
(systemd: 524288); a proxy that keeps the soft one stops accepting at ~500 tunnels. Like
other servers, `serve` raises the soft limit, and only as far as its connections can use
(never lowers it, never above the hard limit), and says so when even the hard limit is
too low for --max-connections.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from proxy64.defaults import FDS_PER_CONNECTION, FDS_RESERVED

MIN_FDS_PER_CONNECTION = 2  # a tunnel's two sockets; without them it cannot exist


@dataclass(frozen=True, slots=True)
class NofileChoice:
    """The soft limit to set and, when the hard limit leaves connections waiting, why."""

    soft: int
    warning: str | None = None


def wanted_fds(max_connections: int) -> int:
    return max_connections * FDS_PER_CONNECTION + FDS_RESERVED


def choose_nofile(soft: int, hard: int, max_connections: int) -> NofileChoice:
    """The soft limit for `max_connections` (pure): what they can use, within the hard
    limit (RLIM_INFINITY: none), never below the soft limit already in force."""
    wanted = wanted_fds(max_connections)
    reachable = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    new = max(soft, reachable)
    needed = max_connections * MIN_FDS_PER_CONNECTION + FDS_RESERVED
    if new >= needed:
        return NofileChoice(new)
    fits = max(0, (new - FDS_RESERVED) // MIN_FDS_PER_CONNECTION)
    return NofileChoice(
        new,
        f"open files limit {new} is below the {needed} that --max-connections "
        f"{max_connections} needs: past about {fits} connections new ones wait for a free "
        "fd; raise the hard limit (ulimit -Hn, LimitNOFILE= in a systemd unit) or lower "
        "--max-connections",
    )


def raise_nofile_limit(max_connections: int) -> NofileChoice:
    """Set this process's soft RLIMIT_NOFILE to choose_nofile's (children and forked
    workers inherit it); a kernel that refuses (above fs.nr_open) keeps the old one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    choice = choose_nofile(soft, hard, max_connections)
    if choice.soft == soft:
        return choice
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (choice.soft, hard))
    except (ValueError, OSError):
        return choose_nofile(soft, soft, max_connections)
    return choice
