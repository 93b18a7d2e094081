"""This host's own addresses, read from the kernel (Linux /proc), for loop protection.

Read once at start-up by the composition root (app.py); the rules are in
proxy64/proto/self_dial.py. Loopback and unspecified addresses count as local there
whatever these files say, so a host without /proc still refuses 127.0.0.1 and [::1].
"""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from proxy64.proto.self_dial import parse_fib_trie_local, parse_if_inet6

IF_INET6 = Path("/proc/net/if_inet6")
FIB_TRIE = Path("/proc/net/fib_trie")


def local_addresses(
    if_inet6: Path = IF_INET6, fib_trie: Path = FIB_TRIE
) -> frozenset[IPv4Address | IPv6Address]:
    """Every address assigned to this host's interfaces (empty when unreadable)."""
    found: set[IPv4Address | IPv6Address] = set()
    # bytes.decode("ascii") takes CPython's built-in codec: no lazy import of the
    # encodings package, which a sandboxed process (no file access left) cannot do
    with contextlib.suppress(OSError):
        found.update(parse_if_inet6(if_inet6.read_bytes().decode("ascii", "replace")))
    with contextlib.suppress(OSError):
        found.update(parse_fib_trie_local(fib_trie.read_bytes().decode("ascii", "replace")))
    return frozenset(found)
