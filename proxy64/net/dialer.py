"""The one dialer: Destination → plan → destination policy → Happy Eyeballs v2 → Dialed.

Used by every front end (SOCKS5, HTTP, TUN). Planning:
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
non-global IPv4 is carried (RFC 6052 §3.1); when it answers unreachable the error names
that likely cause. EMBEDDED dials prefix.extract(address) over IPv4 (proxy64 is the
translator and carries every address); native IPv6 always dials IPv6 (egress None).
Every planned target then passes two checks, in the same place (targets() and
targets_now()): the destination policy (_admit: the access rules of proxy64/rules.py,
with this host and link-local denied by built-in rules behind a shared listener, then
--strict-wkp of proxy64/policy.py) and loop protection (_screen,
proxy64/proto/self_dial.py: never proxy64's own listeners). The rules see the requested
name, each target's addresses (the IPv4 behind a NAT64 target too), the port and the
client's address (`client`, as the front end's records write it).
Several targets race with RFC 8305 (plan in proxy64/proto/attempts.py): 250 ms stagger,
first success wins, losers cancelled and their sockets closed, every failure kept for the
DialError. One target connects directly, without a nursery (the lean common path).
connect_now() is the same dial without waiting (for the front ends driven by the relay
hub): the same planning, policy, egress choice and error mapping; it answers None when
something must be awaited (a name not in the resolver's cache, a race), and a PendingDial
when the one handshake is in flight (finish() waits for it).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address

import trio

from proxy64.defaults import CONNECT_TIMEOUT, HAPPY_EYEBALLS_DELAY
from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import (
    AddressMappingError,
    DeniedByRuleError,
    DialAttempt,
    DialCause,
    DialError,
    LoopError,
    Proxy64Error,
)
from proxy64.net.dial_types import (
    Dialed,
    HostInfoLike,
    PendingDial,
    ResolutionLike,
    ResolverLike,
    UdpTarget,
)
from proxy64.net.nat64_state import Nat64State
from proxy64.policy import (
    LOOPBACK6,
    DestinationPolicy,
    PolicyInForce,
    Refusal,
    RefusalKind,
    is_localhost_name,
    is_loopback,
    nat64_refusal_hint,
    screen,
)
from proxy64.proto.attempts import AttemptPlan, Target
from proxy64.proto.rfc6052 import Nat64Prefix, strict_nat64_refuses
from proxy64.proto.self_dial import OwnListeners
from proxy64.rules import Action, Match, Place, client_address

logger = logging.getLogger(__name__)

_ERRNO_CAUSE = {
    errno.ECONNREFUSED: DialCause.REFUSED,
    errno.ENETUNREACH: DialCause.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: DialCause.HOST_UNREACHABLE,
    errno.ETIMEDOUT: DialCause.TIMEOUT,
    errno.EADDRNOTAVAIL: DialCause.NETWORK_UNREACHABLE,  # no source address for the family
    errno.EAFNOSUPPORT: DialCause.NETWORK_UNREACHABLE,  # IPv6 disabled on this host
}


SocketMaker = Callable[[int, int, int], trio.socket.SocketType]
_LOCALHOST4 = IPv4Address("127.0.0.1")
# What a translator's ICMPv6 refusal becomes: unreachable (RFC 4443 §3.1 codes 0, 3) or
# administratively prohibited (code 1, EACCES on Linux).
_TRANSLATOR_REFUSAL = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES)


_NO_SOCKET = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def cause_of(exc: OSError) -> DialCause:
    return _ERRNO_CAUSE.get(exc.errno or 0, DialCause.OTHER)


class Dialer:
    """Implements DialerLike. socket_factory: (family, type, proto) → trio socket (tests)."""

    def __init__(
        self,
        resolver: ResolverLike,
        prefix: Nat64Prefix | Nat64State,
        egress: Egress | None = None,
        *,
        happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY,
        connect_timeout: float = CONNECT_TIMEOUT,
        socket_factory: SocketMaker | None = None,
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
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.connect_timeout = connect_timeout
        # the policy in force: a reload replaces what it holds (proxy64/reload.py)
        self.live = (
            policy
            if isinstance(policy, PolicyInForce)
            else PolicyInForce(policy if policy is not None else DestinationPolicy())
        )
        self.host_info = host_info
        self._socket: SocketMaker = socket_factory or trio.socket.socket
        self._raw = socket_factory is None  # real sockets: the leaner connect below

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

    # --- planning: destination → targets -------------------------------------------------

    def _target(self, address: IPv6Address, port: int, reached: Reached) -> Target:
        """An IPv6 address to reach: native, this host's loopback, or through the NAT64."""
        prefix = self.prefix
        if not prefix.contains(address):
            return Target(address, port, reached, None)
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
            inside = self.prefix.contains(host)
            return self._target(host, port, Reached.IPV4_LITERAL if inside else Reached.NATIVE_IPV6)
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

    def _admit(
        self, destination: Destination, targets: list[Target], client: str
    ) -> list[Target]:
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

    # --- connecting -------------------------------------------------------------------------

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        targets = await self.targets(destination, client)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "dial %s: %s",
                destination,
                ", ".join(f"{t.address} ({t.reached.value})" for t in targets) or "no address",
            )
        try:
            if len(targets) == 1:
                return await self._connect_one(destination, targets[0])
            if not targets:
                raise DialError(str(destination), ())
            return await self._race(destination, targets)
        except DialError as exc:
            raise self._marked(exc, targets) from None

    async def _connect_one(self, destination: Destination, target: Target) -> Dialed:
        failures: list[DialAttempt] = []
        with trio.move_on_after(self.connect_timeout):
            return await self._attempt(destination, target, failures)
        raise DialError(str(destination), failures or [_timed_out(target)])

    def connect_now(
        self, destination: Destination, client: str = ""
    ) -> Dialed | PendingDial | None:
        """connect() without waiting: Dialed when the handshake completed inside connect()
        (loopback and other local peers), PendingDial when it is in flight (await
        finish()), None when connect() must be used (a name not in the resolver's cache,
        several targets to race, a socket factory). Raises what connect() raises."""
        if not self._raw:
            return None
        targets = self.targets_now(destination, client)
        if targets is None or len(targets) != 1:
            return None
        target = targets[0]
        family, address = _sockaddr(target)
        try:
            raw, connected = _start_raw(family, address)
            if not connected:
                deadline = trio.current_time() + self.connect_timeout
                return PendingDial(destination, target, raw, deadline)
            return self._dialed(destination, target, trio.socket.from_stdlib_socket(raw))
        except OSError as exc:
            raise self._marked(self._failed(destination, target, exc, []), targets) from None

    async def finish(self, pending: PendingDial) -> Dialed:
        """Wait for a PendingDial's handshake; its errors are connect()'s."""
        destination, target, raw = pending.destination, pending.target, pending.sock
        try:
            with trio.move_on_at(pending.deadline):
                await trio.lowlevel.wait_writable(raw)
                err = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                return self._dialed(destination, target, trio.socket.from_stdlib_socket(raw))
        except OSError as exc:
            raw.close()
            raise self._marked(self._failed(destination, target, exc, []), [target]) from None
        except BaseException:
            raw.close()
            raise
        raw.close()
        raise self._marked(DialError(str(destination), [_timed_out(target)]), [target])

    def finish_now(self, pending: PendingDial) -> Dialed:
        """finish() for a PendingDial whose socket is writable (the handshake is over,
        one way or the other): its Dialed, or connect()'s error (the socket closed)."""
        raw = pending.sock
        try:
            err = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            sock = trio.socket.from_stdlib_socket(raw)
            return self._dialed(pending.destination, pending.target, sock)
        except OSError as exc:
            raw.close()
            error = self._failed(pending.destination, pending.target, exc, [])
            raise self._marked(error, [pending.target]) from None

    def abandon(self, pending: PendingDial) -> DialError:
        """A PendingDial whose deadline passed: the socket closed, finish()'s timeout error."""
        pending.sock.close()
        error = DialError(str(pending.destination), [_timed_out(pending.target)])
        return self._marked(error, [pending.target])

    async def _attempt(
        self, destination: Destination, target: Target, failures: list[DialAttempt]
    ) -> Dialed:
        """One connection attempt; on failure records why and raises DialError."""
        family, address = _sockaddr(target)
        try:
            if self._raw:
                sock = await _open_raw(family, address)
            else:
                sock = self._socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                try:
                    await sock.connect(address)
                except BaseException:
                    sock.close()  # cancelled (timeout, or another attempt won): never leak
                    raise
            return self._dialed(destination, target, sock)
        except OSError as exc:
            raise self._failed(destination, target, exc, failures) from None

    def _dialed(
        self, destination: Destination, target: Target, sock: trio.socket.SocketType
    ) -> Dialed:
        try:
            local = sock.getsockname()
            stream = trio.SocketStream(sock)  # sets TCP_NODELAY
        except BaseException:
            sock.close()
            raise
        return Dialed(
            stream=stream,
            destination=destination,
            remote=(target.address, target.port),
            local=(_ip(local[0]), int(local[1])),
            reached=target.reached,
            egress=target.egress,
            strict_nat64_refuses=self._strict_refuses(target),
        )

    def _failed(
        self, destination: Destination, target: Target, exc: OSError, failures: list[DialAttempt]
    ) -> DialError:
        """The one mapping of a failed attempt to its DialError (cause → reply code)."""
        if exc.errno in _NO_SOCKET:
            logger.warning("cannot create a socket to dial %s: %s", destination, exc)
        hint = ""
        if target.egress is Egress.NAT64 and exc.errno in _TRANSLATOR_REFUSAL:
            # The reply code stays the errno's; the message names the translator's policy
            # when the address is one a strict NAT64 refuses (RFC 6052 §3.1).
            ipv4 = self._ipv4_behind(target)
            if ipv4 is not None:
                prefix = self.prefix
                found = nat64_refusal_hint(ipv4, str(prefix), well_known=prefix.is_well_known)
                hint = found or ""
        attempt = DialAttempt(target.address, target.port, cause_of(exc), str(exc), hint=hint)
        failures.append(attempt)
        logger.debug("connect %s:%s failed: %s", target.address, target.port, exc)
        return DialError(str(destination), failures)

    def _marked(self, error: DialError, targets: Sequence[Target]) -> DialError:
        """The readiness mark on a failed dial: would a strict NAT64 refuse it?"""
        error.strict_nat64_refuses = any(self._strict_refuses(t) for t in targets)
        return error

    async def _race(self, destination: Destination, targets: Sequence[Target]) -> Dialed:
        """RFC 8305 §5: staggered attempts; the first success wins, the rest are cancelled."""
        plan = AttemptPlan(targets, self.happy_eyeballs_delay)
        failures: list[DialAttempt] = []
        started: list[Target] = []
        winner: list[Dialed] = []
        failed = trio.Event()

        async def attempt(target: Target) -> None:
            nonlocal failed
            try:
                dialed = await self._attempt(destination, target, failures)
            except DialError:
                plan.failed(trio.current_time())
                failed.set()
                return
            if winner:
                await trio.aclose_forcefully(dialed.stream)  # lost the race by a hair
                return
            winner.append(dialed)
            nursery.cancel_scope.cancel()

        with trio.move_on_after(self.connect_timeout):
            async with trio.open_nursery() as nursery:
                while not plan.exhausted() and not winner:
                    due = plan.next_start()
                    if due is not None and plan.remaining:
                        now = trio.current_time()
                        if now >= due:
                            target = plan.start(now)
                            started.append(target)
                            nursery.start_soon(attempt, target)
                            continue
                        failed = trio.Event()
                        with trio.move_on_after(due - now):
                            await failed.wait()
                    elif plan.remaining:
                        target = plan.start(trio.current_time())
                        started.append(target)
                        nursery.start_soon(attempt, target)
                    else:
                        failed = trio.Event()
                        await failed.wait()
        if winner:
            return winner[0]
        done = {(a.address, a.port) for a in failures}
        failures.extend(_timed_out(t) for t in started if (t.address, t.port) not in done)
        raise DialError(str(destination), failures)


def _sockaddr(target: Target) -> tuple[int, tuple[str, int]]:
    family = socket.AF_INET if target.address.version == 4 else socket.AF_INET6
    # inet_ntop: the C formatter, several times cheaper than ipaddress's str()
    return family, (socket.inet_ntop(family, target.address.packed), target.port)


def _start_raw(family: int, address: tuple[str, int]) -> tuple[socket.socket, bool]:
    """A non-blocking socket with connect() started to a numeric address, and whether the
    handshake is already complete. Raises OSError (the socket closed)."""
    raw = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        raw.setblocking(False)
        err = raw.connect_ex(address)
        if err == errno.EINPROGRESS:
            try:
                # Loopback (and other local) handshakes finish inside connect() though it
                # says EINPROGRESS: one getpeername saves a whole wait on the scheduler.
                raw.getpeername()
                err = 0
            except OSError:
                return raw, False
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        raw.close()
        raise
    return raw, True


async def _open_raw(family: int, address: tuple[str, int]) -> trio.socket.SocketType:
    """A connected trio socket to a numeric address: what trio's connect does, minus its
    address resolution and extra checkpoints (the per-connection path). Raises OSError;
    the socket is closed on every failure, cancellation included."""
    raw, connected = _start_raw(family, address)
    try:
        if not connected:
            await trio.lowlevel.wait_writable(raw)
            err = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        await trio.lowlevel.checkpoint_if_cancelled()  # no scheduler trip when connected
    except BaseException:
        raw.close()
        raise
    return trio.socket.from_stdlib_socket(raw)


def _refusal_error(destination: Destination, refusal: Refusal) -> Proxy64Error:
    """A --strict-wkp refusal as its error: what a strict NAT64's refusal would be."""
    message = f"refused {destination}: {refusal.message}"
    assert refusal.kind is RefusalKind.STRICT_WKP
    error: Proxy64Error = AddressMappingError(message)
    error.strict_nat64_refuses = True
    return error


def _timed_out(target: Target) -> DialAttempt:
    return DialAttempt(target.address, target.port, DialCause.TIMEOUT, "timed out")


def _ip(text: str) -> IPv4Address | IPv6Address:
    """getsockname()'s text → address, parsed by the C inet_pton (cheaper than ipaddress)."""
    if ":" in text:
        return IPv6Address(socket.inet_pton(socket.AF_INET6, text.split("%", maxsplit=1)[0]))
    return IPv4Address(socket.inet_pton(socket.AF_INET, text))
