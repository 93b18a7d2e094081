"""What the dialer needs to know about this host, read without root and kept fresh:
/etc/hosts (re-read when it changes, as the system resolver does) and the host's own
addresses (IPv4 from /proc/net/fib_trie's LOCAL routes, IPv6 from /proc/net/if_inet6).

Both are read at most once per HOST_INFO_REFRESH seconds, on the dialer's path, so a
change is seen within that time and a busy proxy reads no file per connection.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from proxy64.defaults import HOST_INFO_REFRESH
from proxy64.hosts import HostsTable, host_key, parse_hosts

logger = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
HOSTS_PATH = Path("/etc/hosts")
FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def parse_fib_trie_local(text: str) -> frozenset[IPv4Address]:
    """The IPv4 addresses with a `/32 host LOCAL` route: the host's own addresses."""
    out: set[IPv4Address] = set()
    last: str | None = None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "|--":
            last = words[1]
        elif last is not None and words[:3] == ["/32", "host", "LOCAL"]:
            with contextlib.suppress(ValueError):
                out.add(IPv4Address(last))
    return frozenset(out)


def parse_if_inet6(text: str) -> frozenset[IPv6Address]:
    """The addresses of /proc/net/if_inet6 (32 hex digits first on each line)."""
    out: set[IPv6Address] = set()
    for line in text.splitlines():
        words = line.split()
        if not words or len(words[0]) != 32:
            continue
        try:
            out.add(IPv6Address(int(words[0], 16)))
        except ValueError:
            continue
    return frozenset(out)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class HostInfo:
    """hosts(5) lookups and this host's addresses, refreshed every `refresh` seconds."""

    def __init__(
        self,
        hosts_path: Path | None = HOSTS_PATH,
        *,
        refresh: float = HOST_INFO_REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hosts_path = hosts_path
        self._refresh = refresh
        self._clock = clock
        self._hosts: HostsTable = {}
        self._hosts_stamp: tuple[int, int] | None = None
        self._hosts_checked = -float("inf")
        self._own: frozenset[IPAddress] = frozenset()
        self._own_checked = -float("inf")

    def lookup(self, name: str) -> tuple[IPAddress, ...]:
        """The addresses hosts(5) gives name; () when it has none (then DNS decides)."""
        if self._hosts_path is None:
            return ()
        now = self._clock()
        if now - self._hosts_checked >= self._refresh:
            self._hosts_checked = now
            self._reload_hosts(self._hosts_path)
        return self._hosts.get(host_key(name), ())

    def _reload_hosts(self, path: Path) -> None:
        try:
            info = path.stat()
        except OSError:
            self._hosts, self._hosts_stamp = {}, None
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._hosts_stamp:
            self._hosts_stamp = stamp
            self._hosts = parse_hosts(_read(path))
            logger.debug("read %s: %d names", path, len(self._hosts))

    def own_addresses(self) -> frozenset[IPAddress]:
        """This host's addresses, loopback included."""
        now = self._clock()
        if now - self._own_checked >= self._refresh:
            self._own_checked = now
            self._own = parse_fib_trie_local(_read(FIB_TRIE)) | parse_if_inet6(_read(IF_INET6))
        return self._own
