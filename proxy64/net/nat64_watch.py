"""`--nat64-prefix auto`: find the network's NAT64 prefix, then follow it while running.

Order (RFC 9872 prefers PREF64 to RFC 7050):
1. PREF64 (RFC 8781) from Router Advertisements, over rtnetlink (proxy64/net/pref64_listener.py);
2. PREF64 as systemd-networkd learned it (`networkctl --json=short status`);
3. RFC 7050: the DNS64's answer for ipv4only.arpa;
4. none found: the well-known prefix, with the embedded egress (or the nat64 egress
   when it was asked for: "assumed").
At start-up the sources are asked at once and an RA is awaited at most PREF64_STARTUP_WAIT
(the kernel keeps none for us; routers repeat them every few minutes). While running,
watch_nat64() asks again when the prefix in use runs out (PREF64 lifetime, TTL of the
ipv4only.arpa answer; bounded by NAT64_REDISCOVER_MIN/MAX) and at once when an RA
arrives, and puts the result in the shared Nat64State: new connections use it, live
tunnels keep the address they dialed.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.defaults import (
    NAT64_REDISCOVER_MAX,
    NAT64_REDISCOVER_MIN,
    NAT64_RETRY,
    PREF64_STARTUP_WAIT,
    SERVE_DISCOVERY_TIMEOUT,
    WELL_KNOWN_PREFIX,
)
from proxy64.destination import Egress, EgressChoice
from proxy64.errors import ResolutionError
from proxy64.proto.pref64 import Announcement, Pref64Table
from proxy64.proto.rfc6052 import Nat64Prefix

from .discovery import discover_with_ttl
from .nat64_state import Nat64Choice, Nat64State
from .pref64_listener import listen_pref64, networkd_status, open_nduseropt_socket

log = logging.getLogger(__name__)

Rfc7050 = Callable[[tuple[HostPort, ...]], Awaitable[tuple[list[Nat64Prefix], int | None] | None]]
WKP = Nat64Prefix(WELL_KNOWN_PREFIX)


async def rfc7050_lookup(
    servers: tuple[HostPort, ...],
) -> tuple[list[Nat64Prefix], int | None] | None:
    """RFC 7050 discovery: (prefixes, TTL), or None when no DNS server answered."""
    with trio.move_on_after(SERVE_DISCOVERY_TIMEOUT):
        try:
            return await discover_with_ttl(servers)
        except ResolutionError as exc:
            log.debug("RFC 7050 discovery failed: %s", exc)
            return None
    return None


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What one source gave, for `proxy64 discover` and the debug log."""

    source: str  # "PREF64 (RA)", "systemd-networkd", "RFC 7050"
    prefixes: tuple[Nat64Prefix, ...]
    detail: str  # "on eth0 from fe80::1, lifetime 1800 s", "no RA within 1 s", ...


class Nat64Sources:
    """The sources in RFC 9872 order, what each said last, and the choice they make.

    Times are trio's clock; Nat64Choice.expires is in `monotonic`'s (time.monotonic()
    by default) so a choice made here stays meaningful in another trio run or a forked
    worker.
    """

    def __init__(
        self,
        servers: tuple[HostPort, ...],
        egress: EgressChoice = EgressChoice.AUTO,
        *,
        rfc7050: Rfc7050 = rfc7050_lookup,
        open_ra_socket: Callable[[], socket.socket] | None = open_nduseropt_socket,
        networkctl: str | None = "networkctl",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.servers = servers
        self.monotonic = monotonic  # the clock of Nat64Choice.expires
        self.egress = egress
        self.where = ", ".join(str(s) for s in servers) or "/etc/resolv.conf"
        self.table = Pref64Table()
        self.heard = trio.Event()  # set (and replaced) by every PREF64 option heard
        self.heard_any = False
        self._rfc7050 = rfc7050
        self._open_ra_socket = open_ra_socket
        self._networkctl = networkctl
        self._ra_problem = "nothing heard"
        self._networkd: list[tuple[str, Nat64Prefix, float]] = []  # name, prefix, expires
        self._networkd_text = "not asked" if networkctl is None else "not asked yet"
        self._rfc7050_found: list[Nat64Prefix] | None = None  # None: not asked / no answer
        self._rfc7050_until = -math.inf
        self._rfc7050_text = "not asked"

    # --- PREF64 from RAs --------------------------------------------------------------

    def open_ra(self) -> socket.socket | None:
        if self._open_ra_socket is None:
            self._ra_problem = "not asked"
            return None
        try:
            return self._open_ra_socket()
        except OSError as exc:
            self._ra_problem = f"rtnetlink unavailable: {exc.strerror or exc}"
            log.debug("PREF64 from RAs: %s", self._ra_problem)
            return None

    def hear(self, interface: str, announcement: Announcement) -> None:
        pref64 = announcement.pref64
        log.debug(
            "PREF64 %s on %s from %s, lifetime %d s",
            pref64.prefix, interface, announcement.router, pref64.lifetime,
        )  # fmt: skip
        self.table.hear(interface, announcement.router, pref64, trio.current_time())
        self.heard_any = True
        self.heard.set()
        self.heard = trio.Event()

    async def listen(self, sock: socket.socket) -> None:
        with sock:
            try:
                await listen_pref64(sock, self.hear)
            except OSError as exc:  # RAs are one source of several: the others go on
                self._ra_problem = f"rtnetlink failed: {exc.strerror or exc}"
                log.warning("PREF64 from RAs: %s; no longer listening", self._ra_problem)

    # --- asking -----------------------------------------------------------------------

    async def startup(self, ra_wait: float = PREF64_STARTUP_WAIT) -> Nat64Choice:
        """Ask every source once (an RA is awaited at most ra_wait seconds) and choose."""
        sock = self.open_ra()
        deadline = trio.current_time() + ra_wait
        async with trio.open_nursery() as nursery:
            if sock is not None:
                nursery.start_soon(self.listen, sock)
            await self._ask_networkd()
            await self._ask_rfc7050()
            if sock is not None and not len(self.table):
                with trio.move_on_at(deadline):
                    await self.heard.wait()
            nursery.cancel_scope.cancel()
        if sock is not None and not self.heard_any:
            self._ra_problem = f"no RA with PREF64 within {ra_wait:g} s"
        return self.decide()

    async def choose(self) -> Nat64Choice:
        """The prefix to use now, asking networkctl and DNS only when PREF64 has none."""
        if self.table.best(trio.current_time()) is None:
            await self._ask_networkd()
            if not self._networkd:
                await self._ask_rfc7050()
        return self.decide()

    async def _ask_networkd(self) -> None:
        if self._networkctl is None:
            return
        result = await networkd_status(self._networkctl)
        now = trio.current_time()
        self._networkd = [(n, p.prefix, now + p.lifetime) for n, p in result.found if p.lifetime]
        if result.problem is not None:
            self._networkd_text = result.problem
            if result.problem.endswith("not found"):
                self._networkctl = None  # not installed: not asked again while running
        elif self._networkd:
            name, _, expires = self._networkd[0]
            self._networkd_text = f"on {name}, lifetime {int(expires - now)} s"
        else:
            self._networkd_text = "no PREF64 learned"

    async def _ask_rfc7050(self) -> None:
        now = trio.current_time()
        if now < self._rfc7050_until:
            return  # the last answer's TTL has not run out (RFC 7050 §3)
        outcome = await self._rfc7050(self.servers)
        if outcome is None:
            # No answer: keep what was found before (a DNS hiccup is not a change).
            self._rfc7050_until = now + NAT64_RETRY
            if self._rfc7050_found is None:
                self._rfc7050_text = f"no answer from DNS {self.where}"
            return
        found, ttl = outcome
        self._rfc7050_found = found
        lasts = NAT64_RETRY if not found or ttl is None else ttl
        self._rfc7050_until = now + _bounded(lasts)
        if found:
            self._rfc7050_text = f"via {self.where}, TTL {ttl} s"
        else:
            self._rfc7050_text = f"no NAT64 found via DNS {self.where}"

    # --- choosing ---------------------------------------------------------------------

    def decide(self) -> Nat64Choice:
        """The choice from what the sources said last, in RFC 9872 order; no I/O."""
        now = trio.current_time()
        heard = self.table.best(now)
        if heard is not None:
            why = f"PREF64 from RA on {heard.interface}"
            return Nat64Choice(
                heard.prefix, Egress.NAT64, why, self._expires(heard.expires - now), "pref64"
            )
        live = [entry for entry in self._networkd if entry[2] > now]
        if live:
            name, prefix, expires = live[0]
            why = f"PREF64 from systemd-networkd on {name}"
            return Nat64Choice(prefix, Egress.NAT64, why, self._expires(expires - now), "networkd")
        until = self._expires(self._rfc7050_until - now)
        if self._rfc7050_found:
            why = f"RFC 7050 via {self.where}"
            return Nat64Choice(self._rfc7050_found[0], Egress.NAT64, why, until, "rfc7050")
        pref64 = "PREF64 withdrawn or expired" if self.heard_any else self._ra_problem
        why = f"none found: {pref64}; {self._rfc7050_text}"
        if self.egress is EgressChoice.NAT64:
            return Nat64Choice(WKP, Egress.NAT64, f"{why}; assumed", until, "none")
        return Nat64Choice(WKP, Egress.EMBEDDED, why, until, "none")

    def reports(self) -> list[SourceReport]:
        """What each source gave, in the order they are preferred."""
        now = trio.current_time()
        heard = self.table.best(now)
        if heard is not None:
            left = int(heard.expires - now)
            detail = f"on {heard.interface} from {heard.router}, lifetime {left} s"
            ra = SourceReport("PREF64 (RA)", (heard.prefix,), detail)
        else:
            ra = SourceReport("PREF64 (RA)", (), self._ra_problem)
        networkd = SourceReport(
            "systemd-networkd", tuple(p for _, p, _ in self._networkd), self._networkd_text
        )
        found = tuple(self._rfc7050_found or ())
        return [ra, networkd, SourceReport("RFC 7050", found, self._rfc7050_text)]

    # --- when to ask again ------------------------------------------------------------

    def _expires(self, seconds_left: float) -> float:
        return self.monotonic() + max(0.0, seconds_left)

    def next_check(self, choice: Nat64Choice) -> float:
        """Trio time of the next re-discovery for the choice in use."""
        now = trio.current_time()
        candidates = [NAT64_REDISCOVER_MAX]
        if choice.expires is not None:
            candidates.append(choice.expires - self.monotonic())
        expiry = self.table.next_expiry()
        if expiry is not None:
            candidates.append(expiry - now)
        return now + _bounded(min(candidates))


def _bounded(seconds: float) -> float:
    return max(NAT64_REDISCOVER_MIN, min(NAT64_REDISCOVER_MAX, seconds))


def first_choice(egress: EgressChoice, given: Nat64Prefix | None) -> Nat64Choice | None:
    """The choice that needs no discovery (a given prefix, or the embedded egress)."""
    if given is not None:
        embedded = egress is EgressChoice.EMBEDDED
        return Nat64Choice(given, Egress.EMBEDDED if embedded else Egress.NAT64, "given")
    if egress is EgressChoice.EMBEDDED:
        return Nat64Choice(
            WKP, Egress.EMBEDDED, "well-known; the embedded egress needs no NAT64", None, "embedded"
        )
    return None


async def watch_nat64(
    state: Nat64State,
    sources: Nat64Sources,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep state.choice the network's prefix; forever.

    A PREF64 choice this process did not hear itself (made before it listened: at
    start-up in another trio run, or by the supervisor before forking this worker) is
    kept until it expires or an RA says otherwise, since that RA is not heard again.
    """
    seed = state.choice if state.choice.source == "pref64" else None
    sock = sources.open_ra()
    async with trio.open_nursery() as nursery:
        if sock is not None:
            nursery.start_soon(sources.listen, sock)
        task_status.started()
        while True:
            heard = sources.heard
            with trio.move_on_at(sources.next_check(state.choice)):
                await heard.wait()
            choice = await sources.choose()
            keep_seed = seed is not None and not sources.heard_any and choice.source != "pref64"
            if keep_seed and seed is not None and (seed.expires or 0) > sources.monotonic():
                continue
            seed = None
            if state.update(choice) and choice.source == "none":
                log.warning("no NAT64 prefix found any more, falling back: %s", choice.why)


async def resolver_choice(
    settings: ResolverSettings, ra_wait: float = PREF64_STARTUP_WAIT
) -> tuple[Nat64Choice, str | None]:
    """For `resolve` and `dns64`: the prefix to synthesize with, and the one line to
    print when none was found (the well-known prefix is used then)."""
    if settings.prefix is not None:
        return Nat64Choice(settings.prefix, Egress.NAT64, "given"), None
    choice = await Nat64Sources(settings.servers).startup(ra_wait)
    if choice.source != "none":
        return choice, None
    detail = choice.why.removeprefix("none found: ")
    return choice, f"no NAT64 prefix found ({detail}); using {choice.prefix}"


async def follow_nat64(
    state: Nat64State,
    sources: Nat64Sources,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """watch_nat64() as a helper task of a server: should it fail, the server goes on
    with the prefix it has (logged), never stops for it."""
    task_status.started()
    try:
        await watch_nat64(state, sources)
    except Exception:
        log.exception("NAT64 prefix watcher stopped; keeping %s", state.prefix)
