"""The one dialer: Destination → plan (proxy64/net/dial_plan.py: destination policy, loop
protection) → Happy Eyeballs v2 → Dialed.

Used by every front end (SOCKS5, HTTP, TUN). When the NAT64 egress's translator answers
unreachable, the error names the likely cause (a strict NAT64 and a non-global IPv4,
RFC 6052 §3.1). Several targets race with RFC 8305 (plan in proxy64/proto/attempts.py):
250 ms stagger, first success wins, losers cancelled and their sockets closed, every
failure kept for the DialError. One target connects directly, without a nursery (the lean
common path). connect_now() is the same dial without waiting (for the executor the relay
hub drives): the same planning, policy, egress choice and error mapping; it answers None
when something must be awaited (a name not in the resolver's cache, a race), and a
PendingDial when the one handshake is in flight (finish() or, once the socket is
writable, finish_now()).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence

import trio

from proxy64.defaults import CONNECT_TIMEOUT, HAPPY_EYEBALLS_DELAY
from proxy64.destination import Destination, Egress
from proxy64.errors import OUT_OF_RESOURCES, DialAttempt, DialCause, DialError
from proxy64.net.dial_plan import DialPlanner
from proxy64.net.dial_types import Dialed, HostInfoLike, PendingDial, ResolverLike
from proxy64.net.nat64_state import Nat64State
from proxy64.policy import DestinationPolicy, PolicyInForce, nat64_refusal_hint
from proxy64.proto.attempts import AttemptPlan, Target
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.proto.self_dial import OwnListeners

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
# What a translator's ICMPv6 refusal becomes: unreachable (RFC 4443 §3.1 codes 0, 3) or
# administratively prohibited (code 1, EACCES on Linux).
_TRANSLATOR_REFUSAL = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES)


def cause_of(exc: OSError) -> DialCause:
    return _ERRNO_CAUSE.get(exc.errno or 0, DialCause.OTHER)


class Dialer(DialPlanner):
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
        super().__init__(
            resolver,
            prefix,
            egress,
            own_listeners=own_listeners,
            policy=policy,
            host_info=host_info,
        )
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.connect_timeout = connect_timeout
        self._socket: SocketMaker = socket_factory or trio.socket.socket
        self._raw = socket_factory is None  # real sockets: the leaner connect below

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
            return self._dialed(destination, target, raw)
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
                return self._dialed(destination, target, raw)
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
            return self._dialed(pending.destination, pending.target, raw)
        except OSError as exc:
            raw.close()
            # raised without a local name: a frame local holding the error would make
            # error -> traceback -> this frame -> error a cycle (with the caller's frame)
            raise self._marked(
                self._failed(pending.destination, pending.target, exc, []), [pending.target]
            ) from None

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
        sock: socket.socket | trio.socket.SocketType
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
        self,
        destination: Destination,
        target: Target,
        conn: socket.socket | trio.socket.SocketType,
    ) -> Dialed:
        """The Dialed for a connected socket: the dialer's own (raw) one as it is, its trio
        stream made only if a task asks (Dialed.stream); a socket factory's, a trio
        socket, wrapped in its stream now."""
        sock: socket.socket | None = None
        stream: trio.SocketStream | None = None
        try:
            if isinstance(conn, socket.socket):
                # RFC 9293 §3.7.4: no Nagle delay for a request or a relayed chunk (what
                # trio.SocketStream sets too). TCP_NOTSENT_LOWAT, trio's other option, is
                # for a writer that produces data whenever the socket is writable; the
                # hub paths write only what they hold and hand a tunnel whose write would
                # block to the task path, whose stream (made then) sets it.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = conn
            else:
                stream = trio.SocketStream(conn)  # sets TCP_NODELAY
        except BaseException:
            conn.close()
            raise
        return Dialed(
            destination=destination,
            remote=(target.address, target.port),
            reached=target.reached,
            egress=target.egress,
            strict_nat64_refuses=self._strict_refuses(target),
            sock=sock,
            stream=stream,
        )

    def _failed(
        self, destination: Destination, target: Target, exc: OSError, failures: list[DialAttempt]
    ) -> DialError:
        """The one mapping of a failed attempt to its DialError (cause → reply code)."""
        if exc.errno in OUT_OF_RESOURCES:
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
                dialed.close()  # lost the race by a hair
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
    # SOCK_NONBLOCK: non-blocking from socket(2) on, without an ioctl of its own
    raw = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, socket.IPPROTO_TCP)
    try:
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


async def _open_raw(family: int, address: tuple[str, int]) -> socket.socket:
    """A connected socket to a numeric address: what trio's connect does, minus its
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
    return raw


def _timed_out(target: Target) -> DialAttempt:
    return DialAttempt(target.address, target.port, DialCause.TIMEOUT, "timed out")
