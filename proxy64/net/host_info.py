"""What the dialer needs to know about this host, read without root and kept fresh:
/etc/hosts (re-read when it changes, as the system resolver does) and the host's own
addresses (proxy64/net/host_addresses.py: /proc/net/fib_trie's LOCAL routes and
/proc/net/if_inet6), which may change while proxy64 runs.

Both are read at most once per HOST_INFO_REFRESH seconds, on the dialer's path, so a
change is seen within that time and a busy proxy reads no file per connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from proxy64.defaults import HOST_INFO_REFRESH
from proxy64.hosts import HostsTable, host_key, parse_hosts
from proxy64.net.host_addresses import local_addresses

logger = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
HOSTS_PATH = Path("/etc/hosts")


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
            self._own = local_addresses()
        return self._own
