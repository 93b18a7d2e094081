"""Which destinations a connection may reach: the one policy the dialer applies to every
target it planned, so SOCKS, HTTP and TUN share it. Pure: addresses and flags in, a
Refusal (or None) out; no socket, no clock.

- Loopback (127.0.0.0/8, ::1) and the names `localhost` / `*.localhost` (RFC 6761 §6.3)
  are this host: the dialer dials them directly, never through the NAT64.
- protect_host (a listener beyond loopback, no --allow-host-access): this host (loopback,
  its own addresses) and link-local destinations (169.254.0.0/16 with the cloud metadata
  address 169.254.169.254, fe80::/10, fd00:ec2::254) are denied by built-in access rules
  placed after the user's (proxy64/rules.py): a shared proxy does not open its own host,
  or the host's metadata service, to its clients unless an allow rule says so.
- rules: the user's access rules, in order (proxy64/rules.py), first match wins.
- strict_wkp: what a strict NAT64 refuses under 64:ff9b::/96 (RFC 6052 §3.1 as tayga >=
  0.9.4 applies it) is refused before dialing, to test an app against the strictest
  translator it may meet.
Every check sees the address dialed and, when the target is inside the NAT64 prefix (or
dialed over IPv4 by the embedded egress), the IPv4 address behind it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from proxy64.places import (
    CLOUD_METADATA6,
    LINK_LOCAL4,
    LINK_LOCAL6,
    LOCALHOST,
    LOOPBACK4,
    LOOPBACK6,
    IPAddress,
    is_link_local,
    is_localhost_name,
    is_loopback,
)
from proxy64.proto.rfc6052 import is_global_ipv4, strict_nat64_refuses
from proxy64.rules import AccessRules, Rule

__all__ = [
    "CLOUD_METADATA6",
    "LINK_LOCAL4",
    "LINK_LOCAL6",
    "LOCALHOST",
    "LOOPBACK4",
    "LOOPBACK6",
    "DestinationPolicy",
    "PolicyInForce",
    "Refusal",
    "RefusalKind",
    "is_link_local",
    "is_localhost_name",
    "is_loopback",
    "nat64_refusal_hint",
    "screen",
]


class RefusalKind(enum.Enum):
    STRICT_WKP = "strict-wkp"


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The policy: flags fixed at start-up, rules replaced by a reload."""

    protect_host: bool = False  # deny this host and link-local destinations (built-in rules)
    strict_wkp: bool = False  # behave as a strict NAT64 under the well-known prefix
    rules: tuple[Rule, ...] = ()  # the user's access rules, in order


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: RefusalKind
    address: IPAddress  # the address that decided
    message: str  # one sentence: why, and the way out


def screen(
    ipv4: IPv4Address | None,
    *,
    policy: DestinationPolicy,
    well_known: bool,
    prefix: str,
) -> Refusal | None:
    """--strict-wkp on one target: None to dial it, or why not. ipv4 is the IPv4 address
    behind the target (embedded in the NAT64 prefix, or dialed itself over IPv4), None for
    native IPv6. The access rules (this host, link-local) are proxy64/rules.py's."""
    if policy.strict_wkp and well_known and ipv4 is not None and strict_nat64_refuses(ipv4):
        return Refusal(
            RefusalKind.STRICT_WKP,
            ipv4,
            f"--strict-wkp: a strict NAT64 refuses {ipv4} under {prefix} (RFC 6052 §3.1, "
            "as tayga >= 0.9.4 does by default); use the network's specific prefix with "
            "--nat64-prefix",
        )
    return None


def nat64_refusal_hint(ipv4: IPv4Address, prefix: str, *, well_known: bool) -> str | None:
    """The likely cause when the NAT64 answered unreachable for ipv4, or None when the
    address gives no reason to suspect the translator's policy."""
    if not well_known or is_global_ipv4(ipv4):
        return None
    return (
        f"the NAT64 likely refuses {ipv4} under {prefix}: strict translators (RFC 6052 §3.1, "
        "tayga >= 0.9.4) do not carry non-global IPv4 under the well-known prefix; use the "
        "network's specific prefix with --nat64-prefix"
    )


class PolicyInForce:
    """The destination policy now, with its rules ready to evaluate: the dialer reads it
    at every dial, a reload replaces it (new dials use the new rules; a tunnel already
    dialed is not looked at again)."""

    __slots__ = ("access", "policy")

    def __init__(self, policy: DestinationPolicy) -> None:
        self.set(policy)

    def set(self, policy: DestinationPolicy) -> None:
        self.policy = policy
        self.access = AccessRules.build(policy.rules, protect_host=policy.protect_host)
