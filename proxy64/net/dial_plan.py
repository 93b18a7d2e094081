"""Where a dial goes: Destination → targets, each passed by the destination policy and
loop protection. The planning half of the one dialer (proxy64/net/dialer.py adds the
connecting half: Happy Eyeballs, connect_now/finish).

- loopback (127/8, ::1) and `localhost` / `*.localhost` (RFC 6761 §6.3) are this host:
  dialed directly, never through the NAT64 (THIS_HOST for the names, and for 127/8 under
  the nat64 egress; under the embedded egress proxy64 is the translator and dials 127/8
  itself, recorded as the embedded egress; ::1 is native IPv6);
- a name listed in /etc/hosts: its addresses, as the system resolver gives them before DNS
  (an IPv4 entry is handled like an IPv4 literal);
- another name: the DNS64 resolver's IPv6 addresses (native → NATIVE_IPV6, synthesized →
  DNS64);
- an IPv4 literal: embedded in the prefix (RFC 6052 §2.2), reached IPV4_LITERAL;
- an IPv6 literal: as is; inside the prefix it is a NAT64 destination (IPV4_LITERAL).
Egress: NAT64 dials the IPv6 address and leaves to the network's translator whether a
non-global IPv4 is carried (RFC 6052 §3.1). EMBEDDED dials prefix.extract(address) over
IPv4 (proxy64 is the translator and carries every address); native IPv6 always dials IPv6
(egress None).
Every planned target then passes two checks, in the same place (targets() and
targets_now()): the destination policy (_admit: the access rules of proxy64/rules.py,
with this host and link-local denied by built-in rules behind a shared listener, then
--strict-wkp of proxy64/policy.py) and loop protection (_screen,
proxy64/proto/self_dial.py: never proxy64's own listeners). The rules see the requested
name, each target's addresses (the IPv4 behind a NAT64 target too), the port and the
client's address (`client`, as the front end's records write it).
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import (
    AddressMappingError,
    DeniedByRuleError,
    DialError,
    LoopError,
    Proxy64Error,
)
from proxy64.net.dial_types import HostInfoLike, ResolutionLike, ResolverLike, UdpTarget
from proxy64.net.nat64_state import Nat64State
from proxy64.policy import (
    LOOPBACK6,
    DestinationPolicy,
    PolicyInForce,
    Refusal,
    RefusalKind,
    is_localhost_name,
    is_loopback,
    screen,
)
from proxy64.proto.attempts import Target
from proxy64.proto.rfc6052 import Nat64Prefix, strict_nat64_refuses
from proxy64.proto.self_dial import OwnListeners
from proxy64.rules import Action, Match, Place, client_address

logger = logging.getLogger(__name__)

_LOCALHOST4 = IPv4Address("127.0.0.1")


class DialPlanner:
    """Destination → admitted targets; the state a plan depends on (prefix and egress,
    the policy in force, the host's own listeners and hosts(5) entries)."""

    def __init__(
        self,
        resolver: ResolverLike,
        prefix: Nat64Prefix | Nat64State,
        egress: Egress | None = None,
        *,
        own_listeners: OwnListeners | None = None,
        policy: DestinationPolicy | PolicyInForce | None = None,
        host_info: HostInfoLike | None = None,
    ) -> None:
        """prefix: a fixed prefix (with its egress), or the Nat64State the watcher
        updates, whose egress is used (egress must then be None)."""
        self.resolver = resolver
        # proxy64's own listeners: a dial to one of them would loop (proto/self_dial.py)
        self.own = own_listeners if own_listeners is not None else OwnListeners()
        if isinstance(prefix, Nat64State):
            if egress is not None:
                raise TypeError("Dialer: the egress comes from the Nat64State")
            self.nat64 = prefix
        else:
            self.nat64 = Nat64State.fixed(prefix, egress or Egress.NAT64)
        # the policy in force: a reload replaces what it holds (proxy64/reload.py)
        self.live = (
            policy
            if isinstance(policy, PolicyInForce)
            else PolicyInForce(policy if policy is not None else DestinationPolicy())
        )
        self.host_info = host_info

    @property
    def policy(self) -> DestinationPolicy:
        return self.live.policy

    @property
    def prefix(self) -> Nat64Prefix:
        """The prefix now; the watcher may change it between two dials, never during one."""
        return self.nat64.prefix

    @property
    def egress(self) -> Egress:
        return self.nat64.egress

    def _target(self, address: IPv6Address, port: int, reached: Reached) -> Target:
        """An IPv6 address to reach: native, this host's loopback, or through the NAT64."""
        prefix = self.prefix
        if not prefix.contains(address):
            return Target(address, port, reached, None)
        return self._through_prefix(prefix, address, port, reached)

    def _through_prefix(
        self, prefix: Nat64Prefix, address: IPv6Address, port: int, reached: Reached
    ) -> Target:
        """An address inside the prefix: the IPv4 behind it reached the egress's way."""
        ipv4 = prefix.extract(address)
        if self.egress is Egress.EMBEDDED:
            return Target(ipv4, port, reached, Egress.EMBEDDED)
        if is_loopback(ipv4):
            # 127/8 is this host's: a NAT64 would reach its own loopback, never ours.
            return Target(ipv4, port, Reached.THIS_HOST, None)
        return Target(address, port, reached, Egress.NAT64)

    def _address_target(self, host: IPv4Address | IPv6Address, port: int) -> Target:
        """An address literal (or a hosts(5) entry, handled the same way)."""
        if isinstance(host, IPv6Address):
            prefix = self.prefix
            if not prefix.contains(host):
                return Target(host, port, Reached.NATIVE_IPV6, None)
            return self._through_prefix(prefix, host, port, Reached.IPV4_LITERAL)
        if self.egress is Egress.EMBEDDED:
            return Target(host, port, Reached.IPV4_LITERAL, Egress.EMBEDDED)
        if is_loopback(host):
            return Target(host, port, Reached.THIS_HOST, None)  # never through the NAT64
        return Target(self.prefix.embed(host), port, Reached.IPV4_LITERAL, Egress.NAT64)

    def _known_targets(self, destination: Destination) -> list[Target] | None:
        """Targets found without DNS (a literal, localhost, a hosts(5) name); None for a
        name the resolver must answer."""
        host, port = destination.host, destination.port
        if not isinstance(host, str):
            return [self._address_target(host, port)]
        if is_localhost_name(host):
            # RFC 6761 §6.3: resolved to loopback without asking DNS.
            return [
                Target(LOOPBACK6, port, Reached.THIS_HOST, None),
                Target(_LOCALHOST4, port, Reached.THIS_HOST, None),
            ]
        if self.host_info is not None:
            listed = self.host_info.lookup(host)
            if listed:
                return [self._address_target(address, port) for address in listed]
        return None

    def _name_targets(self, resolution: ResolutionLike, port: int) -> list[Target]:
        return [
            self._target(
                record.address, port, Reached.DNS64 if record.synthesized else Reached.NATIVE_IPV6
            )
            for record in resolution.records
        ]

    def _ipv4_behind(self, target: Target) -> IPv4Address | None:
        """The IPv4 address a target reaches: dialed itself, or embedded in the prefix."""
        address = target.address
        if isinstance(address, IPv4Address):
            return address
        if target.egress is Egress.NAT64 and self.prefix.contains(address):
            return self.prefix.extract(address)
        return None  # native IPv6, or planned under a prefix that has changed since

    def _rule_addresses(self, target: Target) -> tuple[IPv4Address | IPv6Address, ...]:
        """What an address rule is checked against: the address dialed, the IPv4 behind
        a NAT64 target, the IPv6 form of an embedded-egress IPv4, an IPv4-mapped IPv6's
        IPv4 (so one rule in either family holds whatever egress is in use)."""
        address = target.address
        if isinstance(address, IPv4Address):
            if target.egress is Egress.EMBEDDED:
                return (address, self.prefix.embed(address))
            return (address,)
        ipv4 = self._ipv4_behind(target) or address.ipv4_mapped
        return (address,) if ipv4 is None else (address, ipv4)

    def _admit(self, destination: Destination, targets: list[Target], client: str) -> list[Target]:
        """The destination policy on every planned target: the one place where SOCKS,
        HTTP and TUN dials are checked. The access rules first (a denied target is
        dropped), then --strict-wkp; when no target is left, the first refusal is raised."""
        live = self.live
        access, strict = live.access, live.policy.strict_wkp
        if not (access.rules or strict):
            return targets
        name = destination.host if isinstance(destination.host, str) else None
        own = (
            self.host_info.own_addresses()
            if access.needs_own_addresses and self.host_info is not None
            else frozenset()
        )
        who = client_address(client) if client and access.needs_client else None
        if not targets and access.rules:  # a name with no address: its name rules decide
            match = access.first_match(
                name=name, addresses=(), port=destination.port, client=who, own=own
            )
            if match is not None and match.rule.action is Action.DENY:
                raise self._denied(destination, match, None)
        admitted: list[Target] = []
        refusal: Proxy64Error | None = None
        for target in targets:
            if access.rules:
                addresses = self._rule_addresses(target)
                match = access.first_match(
                    name=name, addresses=addresses, port=target.port, client=who, own=own
                )
                if match is not None and match.rule.action is Action.DENY:
                    refusal = refusal or self._denied(destination, match, match.address)
                    continue
            found = (
                screen(
                    self._ipv4_behind(target),
                    policy=live.policy,
                    well_known=self.prefix.is_well_known,
                    prefix=str(self.prefix),
                )
                if strict
                else None
            )
            if found is None:
                admitted.append(target)
            elif refusal is None:
                refusal = _refusal_error(destination, found)
        if admitted or refusal is None:
            return admitted
        logger.debug("%s", refusal)
        raise refusal

    @staticmethod
    def _denied(
        destination: Destination, match: Match, address: IPv4Address | IPv6Address | None
    ) -> DeniedByRuleError:
        hint = ""
        if match.rule.origin == "built-in":
            what = (
                "this host"
                if match.rule.dest is Place.THIS_HOST
                else "link-local addresses (cloud metadata)"
            )
            hint = (
                f": a proxy listening beyond loopback does not open {what} to its clients; "
                "an allow rule before it (or --allow-host-access) does"
            )
        shown = None if address is None or address == destination.host else str(address)
        return DeniedByRuleError(str(destination), match.describe(), shown, hint)

    def _strict_refuses(self, target: Target) -> bool:
        """Whether a strict NAT64 would refuse this target (the readiness report's mark)."""
        if target.egress is None or not self.prefix.is_well_known:
            return False
        ipv4 = self._ipv4_behind(target)
        return ipv4 is not None and strict_nat64_refuses(ipv4)

    def _admit_name(self, name: str, destination: Destination, client: str) -> None:
        """The access rules on a name before it is resolved: a name its rules deny is
        never asked of DNS (when an address rule comes first, _admit decides later)."""
        access = self.live.access
        if not access.rules:
            return
        who = client_address(client) if client and access.needs_client else None
        decided, match = access.before_resolution(name=name, port=destination.port, client=who)
        if decided and match is not None and match.rule.action is Action.DENY:
            error = self._denied(destination, match, None)
            logger.debug("%s", error)
            raise error

    async def targets(self, destination: Destination, client: str = "") -> list[Target]:
        targets = self._known_targets(destination)
        if targets is None:
            assert isinstance(destination.host, str)
            self._admit_name(destination.host, destination, client)
            resolution = await self.resolver.resolve(destination.host)
            targets = self._name_targets(resolution, destination.port)
        return self._screen(destination, self._admit(destination, targets, client))

    def targets_now(self, destination: Destination, client: str = "") -> list[Target] | None:
        """targets() without waiting: None when a name's answer is not in the cache."""
        targets = self._known_targets(destination)
        if targets is None:
            assert isinstance(destination.host, str)
            self._admit_name(destination.host, destination, client)
            resolution = self.resolver.resolve_cached(destination.host)
            if resolution is None:
                return None
            targets = self._name_targets(resolution, destination.port)
        return self._screen(destination, self._admit(destination, targets, client))

    def _screen(self, destination: Destination, targets: list[Target]) -> list[Target]:
        """Loop protection, after _admit() on every planned target before a dial: the
        targets that do not reach proxy64's own listeners; LoopError when none is left."""
        if not self.own.by_port.get(targets[0].port if targets else -1):
            return targets  # no listener on this port: the common case, one dict lookup
        kept: list[Target] = []
        looped: tuple[IPv4Address | IPv6Address, int] | None = None
        for target in targets:
            address = target.address
            if target.egress is Egress.NAT64 and isinstance(address, IPv6Address):
                address = self.prefix.extract(address)  # where the NAT64 sends it
            reached = self.own.reached(address, target.port)
            if reached is None:
                kept.append(target)
            else:
                looped = reached
        if not kept and looped is not None:
            host, port = looped
            listener = f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"
            logger.debug("loop refused: %s reaches our listener %s", destination, listener)
            raise LoopError(str(destination), listener)
        return kept

    async def udp_target(self, destination: Destination, client: str = "") -> UdpTarget:
        targets = await self.targets(destination, client)
        if not targets:
            raise DialError(str(destination), ())
        first = targets[0]
        return UdpTarget(
            destination,
            (first.address, first.port),
            first.reached,
            first.egress,
            strict_nat64_refuses=self._strict_refuses(first),
        )


def _refusal_error(destination: Destination, refusal: Refusal) -> Proxy64Error:
    """A --strict-wkp refusal as its error: what a strict NAT64's refusal would be."""
    message = f"refused {destination}: {refusal.message}"
    assert refusal.kind is RefusalKind.STRICT_WKP
    error: Proxy64Error = AddressMappingError(message)
    error.strict_nat64_refuses = True
    return error
