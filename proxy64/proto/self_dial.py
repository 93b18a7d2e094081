"""Loop protection: would a dial reach one of proxy64's own listeners? (pure)

A proxy that dials its own listening port serves itself: one client chaining CONNECT
requests to the proxy's own port in a single write holds two sockets per level until
every slot is gone. A dial to (address, port) reaches a listener when the port is the
listener's and the address is the listener's own, or, for a wildcard listener
(0.0.0.0 / ::, IPv6-only as proxy64 binds it), any address of this host of that family;
connect() to 0.0.0.0 or :: reaches the loopback address (Linux). An IPv4-mapped IPv6
address (::ffff:a.b.c.d) is the IPv4 address. The answer is refused with SOCKS 0x02 /
HTTP 508 Loop Detected (RFC 5842 §7.2).

This host's addresses come from the kernel's tables as text (parse_if_inet6,
parse_fib_trie_local); reading them is proxy64/net/host_addresses.py's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address


def plain(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d → a.b.c.d (RFC 4291 §2.5.5.2); any other address unchanged."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class OwnListeners:
    """proxy64's bound listeners by port, and the addresses of this host."""

    by_port: Mapping[int, tuple[IPAddress, ...]] = field(default_factory=dict)
    local: frozenset[IPAddress] = frozenset()

    @classmethod
    def of(
        cls, listeners: Iterable[tuple[IPAddress, int]], local: Iterable[IPAddress] = ()
    ) -> OwnListeners:
        by_port: dict[int, tuple[IPAddress, ...]] = {}
        for address, port in listeners:
            by_port[port] = (*by_port.get(port, ()), plain(address))
        return cls(by_port, frozenset(plain(a) for a in local))

    def is_local(self, address: IPAddress) -> bool:
        """An address that reaches this host: loopback, unspecified, or one of its own."""
        return address.is_loopback or address.is_unspecified or address in self.local

    def reached(self, address: IPAddress, port: int) -> tuple[IPAddress, int] | None:
        """The listener a dial to address:port would reach, else None."""
        bound = self.by_port.get(port)
        if not bound:
            return None
        address = plain(address)
        for listener in bound:
            if listener.version != address.version:
                continue
            if listener.is_unspecified:
                if self.is_local(address):
                    return listener, port
            elif address == listener or (address.is_unspecified and listener.is_loopback):
                return listener, port
        return None


def parse_if_inet6(text: str) -> list[IPv6Address]:
    """The addresses in /proc/net/if_inet6 (32 hex digits first on each line)."""
    out: list[IPv6Address] = []
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                out.append(IPv6Address(int(fields[0], 16)))
            except ValueError:
                continue
    return out


def parse_fib_trie_local(text: str) -> list[IPv4Address]:
    """The local IPv4 addresses in /proc/net/fib_trie: a leaf "|-- a.b.c.d" followed by a
    "/32 host LOCAL" line (the kernel's local table, every address of this host)."""
    out: list[IPv4Address] = []
    leaf: IPv4Address | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            try:
                leaf = IPv4Address(stripped[4:].strip())
            except ValueError:
                leaf = None
        elif leaf is not None and stripped.startswith("/32 host LOCAL") and leaf not in out:
            out.append(leaf)
    return out
