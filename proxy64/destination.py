"""What a client asked for, and how proxy64 reached it.

A Destination is the front end's output (SOCKS5 / HTTP / TUN flow) and the dialer's input.
Reached and Egress are recorded on every connection for logs and the readiness report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from proxy64.defaults import DESTINATION_TEXT_CACHE

Host = IPv4Address | IPv6Address | str  # str is always a domain name, never a literal


class Reached(enum.Enum):
    """How the IPv6 address that was dialed came about."""

    NATIVE_IPV6 = "native-ipv6"  # an IPv6 literal or a native AAAA record
    DNS64 = "dns64-synthesized"  # synthesized from an A record (RFC 6147)
    IPV4_LITERAL = "ipv4-literal-mapped"  # an IPv4 literal (or hosts(5) entry) in the prefix
    THIS_HOST = "this-host"  # loopback or localhost (RFC 6761 §6.3): dialed directly


class Egress(enum.Enum):
    """Who performs the NAT64 step for an address inside the prefix."""

    NAT64 = "nat64"  # dial the IPv6 address; the network's NAT64 translates
    EMBEDDED = "embedded"  # proxy64 translates: dial the embedded IPv4 address itself


class EgressChoice(enum.Enum):
    """The --egress option: auto picks one of Egress at start-up (RFC 7050 discovery)."""

    AUTO = "auto"
    NAT64 = "nat64"
    EMBEDDED = "embedded"


@dataclass(frozen=True, slots=True)
class Destination:
    host: Host
    port: int

    @classmethod
    def from_text(cls, host: str, port: int) -> Destination:
        """A host as a client wrote it: literal addresses become address objects."""
        text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            return cls(ip_address(text), port)
        except ValueError:
            return cls(text.rstrip(".").lower(), port)

    def __str__(self) -> str:
        return _text(self)


# Written per finished connection (log line, readiness report key): ipaddress formats an
# address in Python on every str(), and a proxy sees the same destinations again and again.
@lru_cache(maxsize=DESTINATION_TEXT_CACHE)
def _text(destination: Destination) -> str:
    """host:port, an IPv6 literal in brackets (RFC 3986 §3.2.2)."""
    host = destination.host
    if isinstance(host, IPv6Address):
        return f"[{host}]:{destination.port}"
    return f"{host}:{destination.port}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One IPv6 address the dialer may try for a destination, with how it came about."""

    address: IPv6Address
    reached: Reached
