"""RFC 6147 DNS64 policy as pure functions over dnspython messages.

The resolver (proxy64/net/resolver.py) does the I/O in two steps and calls these rules:
classify_aaaa() decides on the AAAA response (answer it, or ask for A), then
synthesize_from_a() turns the A response into synthesized AAAA records. Nothing here
touches a socket or a clock; every outcome is a Dns64Answer value.

Invariants: synthesized records carry the owner name of the A RRset and the CNAME/DNAME
chain of the A response (RFC 6147 §5.1.5, §5.1.7); the TTL follows §5.1.7; AAAA inside the
exclusion set count as absent (§5.1.4); NXDOMAIN is never synthesized (§5.1.2); any
other failure of the AAAA query falls through to A (§5.1.3). Every A record is
synthesized under every prefix, non-global IPv4 under 64:ff9b::/96 included, as BIND and
Unbound do: RFC 6052 §3.1 leaves the refusal to the translator, and translators differ
(tayga 0.9.2 carries 100.64/10, AWS's NAT gateway carries RFC 1918).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.IN.AAAA import AAAA

from proxy64.defaults import (
    DNS64_MAX_CHAIN,
    DNS64_RDATA_CACHE,
    SYNTHESIZED_TTL_WITHOUT_SOA,
)
from proxy64.proto.rfc6052 import Nat64Prefix


class Outcome(enum.Enum):
    """The result of one DNS64 lookup, in the words the errors and the server use."""

    ANSWER = "ANSWER"
    NXDOMAIN = "NXDOMAIN"  # RFC 6147 §5.1.2: passed through
    NODATA = "NODATA"  # neither usable AAAA nor synthesizable A
    SERVFAIL = "SERVFAIL"
    TIMEOUT = "TIMEOUT"  # no upstream server answered


@dataclass(frozen=True, slots=True)
class Dns64Answer:
    """What a DNS64 lookup of qname produced, ready for the cache, the API and the wire."""

    qname: dns.name.Name
    outcome: Outcome
    chain: tuple[dns.rrset.RRset, ...]  # CNAME/DNAME RRsets from qname to owner
    owner: dns.name.Name  # owner of the addresses (end of the chain)
    addresses: tuple[IPv6Address, ...]
    synthesized: bool
    ttl: int  # TTL of the addresses, or the negative-caching TTL (RFC 2308 §5)
    soa: dns.rrset.RRset | None = None  # negative answers: the SOA for the authority section
    note: str = ""  # why: A records not synthesized, or which servers timed out (messages)

    @property
    def chain_names(self) -> tuple[dns.name.Name, ...]:
        """The names the chain leads to, in order, without qname itself."""
        names: list[dns.name.Name] = []
        current = self.qname
        for rrset in self.chain:
            current = _chain_step(rrset, current)
            names.append(current)
        return tuple(names)

    def aaaa_rrset(self) -> dns.rrset.RRset | None:
        if not self.addresses:
            return None
        return dns.rrset.from_rdata_list(self.owner, self.ttl, _aaaa_rdatas(self.addresses))


@functools.lru_cache(maxsize=DNS64_RDATA_CACHE)
def _aaaa_rdatas(addresses: tuple[IPv6Address, ...]) -> tuple[AAAA, ...]:
    """AAAA rdata for addresses; memoized because building them dominates a cached reply.

    dnspython rdata objects are immutable, so sharing them between replies is safe.
    """
    return tuple(
        AAAA(dns.rdataclass.IN, dns.rdatatype.AAAA, str(address))  # type: ignore[no-untyped-call]
        for address in addresses
    )


@dataclass(frozen=True, slots=True)
class NeedA:
    """The AAAA step found no usable AAAA: query A next (RFC 6147 §5.1.1, §5.1.3).

    soa_ttl is the negative TTL of the AAAA answer (None when it carried no SOA);
    fallback is what to answer when A yields nothing to synthesize either.
    """

    soa_ttl: int | None
    fallback: Dns64Answer

    @classmethod
    def without_aaaa(cls, qname: dns.name.Name) -> NeedA:
        """synthesize_all: AAAA was not asked, so A alone decides (no SOA: §5.1.7 600 s)."""
        return cls(None, _negative(qname, Outcome.SERVFAIL, None))


def negative_ttl(response: dns.message.Message) -> tuple[int | None, dns.rrset.RRset | None]:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM) seconds."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            minimum = int(rrset[0].minimum)
            return min(int(rrset.ttl), minimum), rrset
    return None, None


def synthesized_ttl(a_ttl: int, soa_ttl: int | None) -> int:
    """RFC 6147 §5.1.7: min(A TTL, negative AAAA SOA TTL); without SOA at most 600 s."""
    if soa_ttl is None:
        return min(a_ttl, SYNTHESIZED_TTL_WITHOUT_SOA)
    return min(a_ttl, soa_ttl)


def _chain_step(rrset: dns.rrset.RRset, current: dns.name.Name) -> dns.name.Name:
    target: dns.name.Name = rrset[0].target
    if rrset.rdtype == dns.rdatatype.DNAME:
        # RFC 6672 §2.2: replace the DNAME owner suffix of current by the target.
        return current.relativize(rrset.name).concatenate(target)
    return target


def follow_chain(
    response: dns.message.Message, qname: dns.name.Name, rdtype: int
) -> tuple[tuple[dns.rrset.RRset, ...], dns.name.Name, dns.rrset.RRset | None]:
    """Walk CNAME/DNAME records from qname in the answer section.

    Returns the chain RRsets, the last name reached and the RRset of rdtype owned by it
    (None when the chain ends without one). Loops and over-long chains stop the walk.
    """
    chain: list[dns.rrset.RRset] = []
    current = qname
    seen = {qname}
    for _ in range(DNS64_MAX_CHAIN):
        found = _find(response.answer, current, rdtype)
        if found is not None:
            return tuple(chain), current, found
        step = _find(response.answer, current, dns.rdatatype.CNAME)
        if step is None:
            step = _covering_dname(response.answer, current)
            if step is None:
                break
        chain.append(step)
        current = _chain_step(step, current)
        if current in seen:
            break
        seen.add(current)
    return tuple(chain), current, None


def _find(
    section: Sequence[dns.rrset.RRset], name: dns.name.Name, rdtype: int
) -> dns.rrset.RRset | None:
    for rrset in section:
        if (
            rrset.name == name
            and rrset.rdtype == rdtype
            and rrset.rdclass == dns.rdataclass.IN
            and len(rrset) > 0
        ):
            return rrset
    return None


def _covering_dname(
    section: Sequence[dns.rrset.RRset], name: dns.name.Name
) -> dns.rrset.RRset | None:
    for rrset in section:
        if (
            rrset.rdtype == dns.rdatatype.DNAME
            and len(rrset) > 0
            and name != rrset.name
            and name.is_subdomain(rrset.name)
        ):
            return rrset
    return None


def usable_aaaa(rrset: dns.rrset.RRset, excluded: Iterable[IPv6Network]) -> tuple[IPv6Address, ...]:
    """RFC 6147 §5.1.4: AAAA records inside the exclusion set are treated as absent."""
    nets = tuple(excluded)
    out = []
    for rdata in rrset:
        address = IPv6Address(rdata.address)
        if not any(address in net for net in nets):
            out.append(address)
    return tuple(out)


def is_mapped(ipv4: IPv4Address, mapped: Sequence[IPv4Network]) -> bool:
    """BIND's "mapped" list: when given, only these IPv4 ranges are synthesized."""
    return not mapped or any(ipv4 in net for net in mapped)


def synthesize_addresses(
    a_rrset: dns.rrset.RRset, prefix: Nat64Prefix, mapped: Sequence[IPv4Network] = ()
) -> tuple[IPv6Address, ...]:
    """RFC 6147 §5.1.6 (data for synthesis, "mapped") + §5.1.7 + RFC 6052 §2.2: embed each A.

    No address is filtered by its value: non-global IPv4 is the translator's to refuse
    (RFC 6052 §3.1). Only a --dns64-mapped list (BIND's "mapped") narrows the set.
    """
    out = []
    for rdata in a_rrset:
        ipv4 = IPv4Address(rdata.address)
        if is_mapped(ipv4, mapped):
            out.append(prefix.embed(ipv4))
    return tuple(out)


def _negative(
    qname: dns.name.Name,
    outcome: Outcome,
    response: dns.message.Message | None,
    chain: tuple[dns.rrset.RRset, ...] = (),
    owner: dns.name.Name | None = None,
) -> Dns64Answer:
    ttl, soa = negative_ttl(response) if response is not None else (None, None)
    return Dns64Answer(
        qname=qname,
        outcome=outcome,
        chain=chain,
        owner=owner if owner is not None else qname,
        addresses=(),
        synthesized=False,
        ttl=ttl if ttl is not None else 0,
        soa=soa,
    )


def classify_aaaa(
    response: dns.message.Message | None,
    qname: dns.name.Name,
    excluded: Iterable[IPv6Network],
) -> Dns64Answer | NeedA:
    """Step 1 (RFC 6147 §5.1.1–§5.1.4): answer from AAAA, or say that A is needed.

    response None means no server answered the AAAA query (a timeout, §5.1.3).
    """
    if response is None:
        return NeedA(None, _negative(qname, Outcome.TIMEOUT, None))
    rcode = response.rcode()
    chain, owner, rrset = follow_chain(response, qname, dns.rdatatype.AAAA)
    if rcode == dns.rcode.NXDOMAIN:
        # RFC 6147 §5.1.2: name error is passed through, never synthesized.
        return _negative(qname, Outcome.NXDOMAIN, response, chain, owner)
    if rcode != dns.rcode.NOERROR:
        # RFC 6147 §5.1.3: any other RCODE is treated as an empty answer.
        return NeedA(None, _negative(qname, Outcome.SERVFAIL, None))
    addresses = usable_aaaa(rrset, excluded) if rrset is not None else ()
    if rrset is not None and addresses:
        return Dns64Answer(
            qname=qname,
            outcome=Outcome.ANSWER,
            chain=chain,
            owner=owner,
            addresses=addresses,
            synthesized=False,
            ttl=int(rrset.ttl),
        )
    soa_ttl, _ = negative_ttl(response)
    return NeedA(soa_ttl, _negative(qname, Outcome.NODATA, response, chain, owner))


def synthesize_from_a(
    response: dns.message.Message | None,
    qname: dns.name.Name,
    prefix: Nat64Prefix,
    need: NeedA,
    mapped: Sequence[IPv4Network] = (),
) -> Dns64Answer:
    """Step 2 (RFC 6147 §5.1.5-§5.1.7): synthesize AAAA from the A response."""
    if response is None:
        return _negative(qname, Outcome.TIMEOUT, None)
    rcode = response.rcode()
    chain, owner, rrset = follow_chain(response, qname, dns.rdatatype.A)
    if rcode == dns.rcode.NXDOMAIN:
        return _negative(qname, Outcome.NXDOMAIN, response, chain, owner)
    if rcode != dns.rcode.NOERROR:
        if need.fallback.outcome is Outcome.NODATA:
            return need.fallback  # the AAAA answer was a clean NODATA: keep it
        return _negative(qname, Outcome.SERVFAIL, None)
    addresses = synthesize_addresses(rrset, prefix, mapped) if rrset is not None else ()
    if rrset is None or not addresses:
        negative = need.fallback
        if negative.outcome is not Outcome.NODATA:
            negative = _negative(qname, Outcome.NODATA, response, chain, owner)
        if rrset is not None:
            skipped = ", ".join(rdata.address for rdata in rrset)
            why = "not inside the --dns64-mapped ranges"
            negative = dataclasses.replace(negative, note=f"A records {skipped} are {why}")
        return negative  # nothing to synthesize: answer as the AAAA query did (NODATA)
    return Dns64Answer(
        qname=qname,
        outcome=Outcome.ANSWER,
        chain=chain,
        owner=owner,
        addresses=addresses,
        synthesized=True,
        ttl=synthesized_ttl(int(rrset.ttl), need.soa_ttl),
    )
