"""The DNS64 resolver (RFC 6147 §5.1): AAAA first, synthesis from A, cached.

I/O only: queries go to the upstream servers in order (dns_exchange.py: UDP with answers
matched as RFC 5452 §9.1 asks, then TCP when the reply has TC=1, RFC 7766 §5), failing
over on timeout, refusal, malformed answers, SERVFAIL, REFUSED, NOTIMP or FORMERR.
The rules live in proxy64/proto/dns64.py.
No thread and no getaddrinfo: a query is a trio task.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address
from pathlib import Path
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.defaults import DNS_EDNS_PAYLOAD, DNS_PORT, DNS_PREFIX_CHANGE_RETRIES
from proxy64.errors import ResolutionError
from proxy64.proto.dns64 import (
    Dns64Answer,
    NeedA,
    Outcome,
    classify_aaaa,
    synthesize_from_a,
)
from proxy64.proto.rfc6052 import Nat64Prefix

from .dns_cache import Dns64Cache, cache_key
from .dns_exchange import DnsExchangeError, exchange
from .nat64_state import Nat64Choice, Nat64State

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
_RETRY_NEXT = (dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP, dns.rcode.FORMERR)


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    address: IPv6Address
    synthesized: bool  # True: an A record embedded in the NAT64 prefix (RFC 6147)
    ttl: int  # seconds left


@dataclass(frozen=True, slots=True)
class Resolution:
    qname: str  # the name asked, without the final dot
    chain: tuple[str, ...]  # CNAME/DNAME targets followed from qname, in order
    records: tuple[ResolvedAddress, ...]
    from_cache: bool


def servers_from_resolv_conf(path: Path = RESOLV_CONF) -> tuple[HostPort, ...]:
    """The `nameserver` lines of resolv.conf(5); 127.0.0.1 when there are none."""
    servers: list[HostPort] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                host = ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            servers.append(HostPort(host, DNS_PORT))
    return tuple(servers) or (HostPort(ip_address("127.0.0.1"), DNS_PORT),)


async def query_servers(
    servers: tuple[HostPort, ...],
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    *,
    per_try: float,
    lifetime: float,
    dnssec_ok: bool = False,
    checking_disabled: bool = False,
) -> dns.message.Message:
    """One query, tried on each server in order until one gives a usable answer.

    Returns the first NOERROR/NXDOMAIN answer, else the last error answer (SERVFAIL ...).
    Raises ResolutionError(TIMEOUT) when no server answered at all within lifetime.
    """
    query = dns.message.make_query(
        qname, rdtype, use_edns=0, payload=DNS_EDNS_PAYLOAD, want_dnssec=dnssec_ok
    )
    if checking_disabled:
        query.flags |= dns.flags.CD
    problems: list[str] = []
    last_error_answer: dns.message.Message | None = None
    with trio.move_on_after(lifetime):
        for server in servers:
            try:
                response = await exchange(query, server, per_try)
            except DnsExchangeError as exc:
                problems.append(str(exc))
                continue
            if response.rcode() in _RETRY_NEXT:
                problems.append(f"{server} answered {dns.rcode.to_text(response.rcode())}")
                last_error_answer = response
                continue
            return response
    if last_error_answer is not None:
        return last_error_answer
    if len(problems) < len(servers):
        problems.append(f"gave up after {lifetime:g} s")
    raise ResolutionError(qname.to_text(omit_final_dot=True), "TIMEOUT", "; ".join(problems))


class _Pending:
    """One upstream lookup in progress; later askers of the same name wait for it."""

    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer: Dns64Answer | None = None


class Dns64Observer(Protocol):
    def dns64_answered(self, answer: Dns64Answer, from_cache: bool) -> None:
        """One answer given: from the cache, or from the upstream servers (metrics)."""
        ...


class DNS64Resolver:
    """RFC 6147 DNS64 with a TTL-honouring cache; built once, shared by every front end.

    The prefix is read from a Nat64State (a fixed prefix is wrapped in one): when it
    changes the cache is emptied, and an answer synthesized with the old prefix while
    the change happened is neither cached nor handed to lookups started after it.
    """

    def __init__(
        self,
        settings: ResolverSettings,
        prefix: Nat64Prefix | Nat64State,
        *,
        cache: Dns64Cache | None = None,
        clock: Callable[[], float] = trio.current_time,
        observer: Dns64Observer | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.nat64 = prefix if isinstance(prefix, Nat64State) else Nat64State.fixed(prefix)
        self.servers = settings.servers or servers_from_resolv_conf()
        self.cache = cache if cache is not None else Dns64Cache()
        self._clock = clock
        self._inflight: dict[tuple[int, str], _Pending] = {}
        self.nat64.on_change(self._prefix_changed)

    @property
    def prefix(self) -> Nat64Prefix:
        return self.nat64.prefix

    def _prefix_changed(self, old: Nat64Choice, new: Nat64Choice) -> None:
        # Cached AAAA records were synthesized with the old prefix (RFC 6147 §5.1.7).
        self.cache.clear()

    async def query(
        self,
        qname: dns.name.Name | str,
        rdtype: dns.rdatatype.RdataType | str,
        *,
        dnssec_ok: bool = False,
        checking_disabled: bool = False,
    ) -> dns.message.Message:
        """A raw upstream query with failover (the DNS64 server's pass-through).

        dnssec_ok and checking_disabled set DO and CD (RFC 4035 §3.2) for clients that
        validate themselves.
        """
        name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
        return await query_servers(
            self.servers,
            name,
            dns.rdatatype.RdataType.make(rdtype),
            per_try=self.settings.timeout,
            lifetime=self.settings.lifetime,
            dnssec_ok=dnssec_ok,
            checking_disabled=checking_disabled,
        )

    async def lookup(self, qname: dns.name.Name) -> tuple[Dns64Answer, bool]:
        """The DNS64 answer for qname and whether it came from the cache; never raises.

        Concurrent lookups of one name share a single upstream exchange (a page opening
        many connections to one host asks DNS once).

        An answer synthesized while the NAT64 prefix changed is under a prefix no longer
        in use (its addresses would be dialed as native IPv6): it is asked again, under
        the new prefix, up to DNS_PREFIX_CHANGE_RETRIES times.
        """
        for _ in range(DNS_PREFIX_CHANGE_RETRIES):
            generation = self.nat64.generation
            answer, from_cache = await self._lookup(qname)
            if not answer.synthesized or generation == self.nat64.generation:
                break
        return answer, from_cache

    async def _lookup(self, qname: dns.name.Name) -> tuple[Dns64Answer, bool]:
        key = cache_key(qname)
        cached = self.cache.get(key, self._clock())
        if cached is not None:
            if self.observer is not None:
                self.observer.dns64_answered(cached, True)
            return cached, True
        generation = self.nat64.generation
        flight = (generation, key)
        pending = self._inflight.get(flight)
        if pending is not None:
            await pending.done.wait()
            if pending.answer is not None:
                return pending.answer, False
            # the first asker was cancelled before it had an answer: ask ourselves
        pending = _Pending()
        self._inflight[flight] = pending
        try:
            answer = await self._lookup_upstream(qname, self.prefix)
            pending.answer = answer
        finally:
            if self._inflight.get(flight) is pending:
                del self._inflight[flight]
            pending.done.set()
        if generation == self.nat64.generation:
            self.cache.put(answer, self._clock())
        if self.observer is not None:
            self.observer.dns64_answered(answer, False)
        if answer.outcome is not Outcome.ANSWER:
            log.debug("DNS64 %s: %s", qname, answer.outcome.value)
        return answer, False

    async def _lookup_upstream(self, qname: dns.name.Name, prefix: Nat64Prefix) -> Dns64Answer:
        problems: list[str] = []
        if self.settings.synthesize_all:
            need = NeedA.without_aaaa(qname)
        else:
            aaaa = await self._try(qname, dns.rdatatype.AAAA, problems)
            step = classify_aaaa(aaaa, qname, self.settings.excluded)
            if isinstance(step, Dns64Answer):
                return step
            need = step
        a_response = await self._try(qname, dns.rdatatype.A, problems)
        answer = synthesize_from_a(a_response, qname, prefix, need, self.settings.mapped)
        if answer.outcome is Outcome.TIMEOUT and problems:
            # Say which servers failed how: "192.0.2.53:53 timed out after 2 s".
            answer = dataclasses.replace(answer, note=problems[-1])
        return answer

    async def _try(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, problems: list[str]
    ) -> dns.message.Message | None:
        try:
            return await self.query(qname, rdtype)
        except ResolutionError as exc:
            log.debug("%s", exc)
            problems.append(exc.detail)
            return None

    def resolve_cached(self, name: str) -> Resolution | None:
        """resolve()'s answer when the cache holds one (None: it must ask DNS); raises
        ResolutionError for a cached failure, like resolve(). Never waits."""
        # A cached name is found by its text, without parsing it into a Name.
        cached = self.cache.get(name.strip().rstrip(".").lower(), self._clock())
        if cached is None:
            return None
        if self.observer is not None:
            self.observer.dns64_answered(cached, True)
        return _resolution(cached, from_cache=True)

    async def resolve(self, name: str) -> Resolution:
        """Addresses to dial for name; raises ResolutionError with the DNS outcome."""
        cached = self.resolve_cached(name)
        if cached is not None:
            return cached
        try:
            qname = dns.name.from_text(name.strip())
        except (dns.exception.DNSException, UnicodeError) as exc:
            raise ResolutionError(name, "NXDOMAIN", f"not a valid DNS name ({exc})") from None
        answer, from_cache = await self.lookup(qname)
        return _resolution(answer, from_cache=from_cache)


def _resolution(answer: Dns64Answer, *, from_cache: bool) -> Resolution:
    text = answer.qname.to_text(omit_final_dot=True)
    if answer.outcome is not Outcome.ANSWER:
        raise ResolutionError(text, answer.outcome.value, answer.note)
    return Resolution(
        qname=text,
        chain=tuple(n.to_text(omit_final_dot=True) for n in answer.chain_names),
        records=tuple(ResolvedAddress(a, answer.synthesized, answer.ttl) for a in answer.addresses),
        from_cache=from_cache,
    )
