"""Differential tests: proxy64's DNS64 against Unbound and BIND as DNS64, all in front of a
real NSD.

NSD serves tests/data/dns/dns64.test.zone on loopback; for the well-known prefix and a
network-specific prefix of each RFC 6052 length, one Unbound (`module-config: "dns64
iterator"`) forwards to it; for the well-known prefix and a /64, one BIND (`dns64 PREFIX
{ };`). proxy64's resolver asks NSD directly. Where RFC 6147 is clear and Unbound follows
it, the answers must match exactly; where Unbound deviates, the test asserts the RFC and
its docstring says so. BIND follows RFC 6147 in everything asked here, so proxy64's
answers (resolver and `proxy64 dns64` server) must equal BIND's, non-global IPv4 under
the well-known prefix included: neither filters by address (RFC 6052 §3.1 is the
translator's rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import dns.asyncbackend
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from proxy64.config import ResolverSettings
from proxy64.errors import ResolutionError
from proxy64.net.dns_server import DNS64Responder
from proxy64.net.resolver import DNS64Resolver, Resolution
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import (
    DnsProcess,
    start_bind_dns64,
    start_nsd,
    start_unbound_dns64,
)

DATA = Path(__file__).parent.parent / "data" / "dns"
ZONE = "dns64.test."
TRIO = dns.asyncbackend.get_backend("trio")
PREFIXES = (
    "64:ff9b::/96",
    "2001:db8::/32",
    "2001:db8:100::/40",
    "2001:db8:122::/48",
    "2001:db8:122:300::/56",
    "2001:db8:122:344::/64",
    "2001:db8:122:344::/96",
)
NEGATIVE_TTL = 300  # min(SOA TTL 3600, MINIMUM 300), RFC 2308 §5


@pytest.fixture(scope="module")
def nsd() -> Iterator[DnsProcess]:
    zones = {
        ZONE: (DATA / "dns64.test.zone").read_text(),
        "ipv4only.arpa.": (DATA / "ipv4only.arpa.zone").read_text(),
    }
    with start_nsd(zones) as server:
        yield server


@pytest.fixture(scope="module", params=PREFIXES)
def unbound(request: pytest.FixtureRequest, nsd: DnsProcess) -> Iterator[tuple[str, DnsProcess]]:
    with start_unbound_dns64(request.param, nsd.address, probe_zone=ZONE) as server:
        yield request.param, server


async def unbound_aaaa(server: DnsProcess, name: str) -> dns.message.Message:
    query = dns.message.make_query(name + "." + ZONE, "AAAA", use_edns=0, payload=1232)
    with trio.fail_after(5):
        return await dns.asyncquery.tcp(query, server.host, port=server.port, backend=TRIO)


def addresses(reply: dns.message.Message) -> set[IPv6Address]:
    return {
        IPv6Address(r.address)
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.AAAA
        for r in rrset
    }


def fresh(ttl: int, original: int) -> bool:
    """Unbound caches across tests of one module, so its TTLs count down a few seconds."""
    return original - 30 <= ttl <= original


async def ours(nsd: DnsProcess, prefix: str, name: str) -> Resolution:
    p = Nat64Prefix.parse(prefix)
    resolver = DNS64Resolver(ResolverSettings(servers=(nsd.address,), prefix=p), p)
    with trio.fail_after(10):
        return await resolver.resolve(name + "." + ZONE)


@pytest.mark.parametrize("name", ["a-short", "aaaa-only", "both", "alias", "alias2", "many"])
async def test_same_addresses_as_unbound(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess], name: str
) -> None:
    prefix, server = unbound
    theirs = await unbound_aaaa(server, name)
    mine = await ours(nsd, prefix, name)
    assert {r.address for r in mine.records} == addresses(theirs)
    assert addresses(theirs)


async def test_chain_and_owner_match_unbound(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess]
) -> None:
    prefix, server = unbound
    theirs = await unbound_aaaa(server, "alias2")
    cnames = [
        rrset[0].target.to_text(omit_final_dot=True)
        for rrset in theirs.answer
        if rrset.rdtype == dns.rdatatype.CNAME
    ]
    mine = await ours(nsd, prefix, "alias2")
    assert list(mine.chain) == cnames == ["alias.dns64.test", "a-only.dns64.test"]
    # the synthesized AAAA is owned by the A RRset's owner, in our wire answer as in theirs
    p = Nat64Prefix.parse(prefix)
    responder = DNS64Responder(DNS64Resolver(ResolverSettings(servers=(nsd.address,), prefix=p), p))
    wire = await responder.respond(
        dns.message.make_query("alias2." + ZONE, "AAAA").to_wire(), transport="tcp"
    )
    assert wire is not None
    owners = {
        rrset.name
        for rrset in dns.message.from_wire(wire).answer
        if rrset.rdtype == dns.rdatatype.AAAA
    }
    assert owners == {rrset.name for rrset in theirs.answer if rrset.rdtype == dns.rdatatype.AAAA}


async def test_native_aaaa_ttl_and_kind(nsd: DnsProcess, unbound: tuple[str, DnsProcess]) -> None:
    prefix, server = unbound
    mine = await ours(nsd, prefix, "both")
    assert [(str(r.address), r.synthesized, r.ttl) for r in mine.records] == [
        ("2001:db8:1::2", False, 1800)
    ]
    theirs = await unbound_aaaa(server, "both")
    assert fresh(theirs.answer[0].ttl, 1800)


async def test_rfc6147_5_1_7_ttl_is_min_of_a_and_negative_soa(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess]
) -> None:
    """RFC 6147 §5.1.7: min(A TTL 3600, SOA negative TTL 300) = 300.

    Unbound copies the A TTL (3600) — it deviates; BIND follows the RFC. We assert the RFC.
    With an A TTL (60) below the SOA one both agree.
    """
    prefix, server = unbound
    mine = await ours(nsd, prefix, "a-only")
    assert {r.ttl for r in mine.records} == {NEGATIVE_TTL}
    assert fresh((await unbound_aaaa(server, "a-only")).answer[0].ttl, 3600)  # Unbound deviates
    short = await ours(nsd, prefix, "a-short")
    assert {r.ttl for r in short.records} == {60}
    assert fresh((await unbound_aaaa(server, "a-short")).answer[0].ttl, 60)


async def test_rfc6147_5_1_4_v4mapped_aaaa_is_excluded(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess]
) -> None:
    """RFC 6147 §5.1.4: AAAA inside ::ffff:0:0/96 count as absent, so A is synthesized.

    Unbound returns the ::ffff: record as is (a deviation; BIND excludes it). We assert the RFC.
    """
    prefix, server = unbound
    mine = await ours(nsd, prefix, "v4mapped")
    assert [r.address for r in mine.records] == [
        Nat64Prefix.parse(prefix).embed(IPv4Address("1.2.3.7"))
    ]
    assert addresses(await unbound_aaaa(server, "v4mapped")) == {IPv6Address("::ffff:1.2.3.7")}


NON_GLOBAL = ["private", "mixed", "shared", "loopback", "linklocal", "zero"]


@pytest.mark.parametrize("name", NON_GLOBAL)
async def test_rfc6052_3_1_non_global_a_synthesized_like_unbound(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess], name: str
) -> None:
    """RFC 6052 §3.1 is the translator's rule: under every prefix, the well-known one
    included, 10/8, 100.64/10, 127/8, 169.254/16 and 0.0.0.0 are synthesized, as Unbound
    and BIND do."""
    prefix, server = unbound
    mine = {r.address for r in (await ours(nsd, prefix, name)).records}
    assert mine == addresses(await unbound_aaaa(server, name)) and mine


# --- BIND: the same questions, the same answers -------------------------------------------

BIND_PREFIXES = ("64:ff9b::/96", "2001:db8:122:344::/64")
BIND_NAMES = [*NON_GLOBAL, "a-only", "a-short", "both", "alias2", "v4mapped", "svc"]


@pytest.fixture(scope="module", params=BIND_PREFIXES)
def bind(request: pytest.FixtureRequest, nsd: DnsProcess) -> Iterator[tuple[str, DnsProcess]]:
    with start_bind_dns64(request.param, nsd.address, probe_zone=ZONE) as server:
        yield request.param, server


async def ask_tcp(host: str, port: int, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    with trio.fail_after(5):
        return await dns.asyncquery.tcp(query, host, port=port, backend=TRIO)


def answer_set(reply: dns.message.Message) -> set[tuple[str, str, str]]:
    """(owner, type, rdata) of the answer section: what a client reads, TTL aside."""
    return {
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
        for rrset in reply.answer
        for rdata in rrset
    }


async def our_server_reply(
    nsd: DnsProcess, prefix: str, name: str, rdtype: str
) -> dns.message.Message:
    """The `proxy64 dns64` server's reply (DNS64Responder, the code behind the command)."""
    p = Nat64Prefix.parse(prefix)
    responder = DNS64Responder(DNS64Resolver(ResolverSettings(servers=(nsd.address,), prefix=p), p))
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    with trio.fail_after(10):
        wire = await responder.respond(query.to_wire(), transport="tcp")
    assert wire is not None
    return dns.message.from_wire(wire)


@pytest.mark.parametrize("name", BIND_NAMES)
async def test_aaaa_answers_equal_bind(
    nsd: DnsProcess, bind: tuple[str, DnsProcess], name: str
) -> None:
    """Same rcode, same owner/type/rdata (CNAME chain and synthesized AAAA) and the same
    TTL (BIND also takes min(A TTL, negative SOA TTL), RFC 6147 §5.1.7) for the resolver
    and the DNS64 server. One deviation of BIND's: for v4mapped the excluded AAAA answer
    carries no SOA, where §5.1.7 says min(A TTL, 600); BIND copies the A TTL (3600)."""
    prefix, server = bind
    qname = name + "." + ZONE
    theirs = await ask_tcp(server.host, server.port, qname, "AAAA")
    mine = await our_server_reply(nsd, prefix, qname, "AAAA")
    assert mine.rcode() == theirs.rcode() == dns.rcode.NOERROR
    assert answer_set(mine) == answer_set(theirs) and addresses(theirs)
    for ours_rrset in mine.answer:
        their_rrset = theirs.find_rrset(
            theirs.answer, ours_rrset.name, ours_rrset.rdclass, ours_rrset.rdtype
        )
        if name == "v4mapped" and ours_rrset.rdtype == dns.rdatatype.AAAA:
            assert (ours_rrset.ttl, their_rrset.ttl) == (600, 3600)  # BIND deviates
            continue
        assert fresh(their_rrset.ttl, ours_rrset.ttl), (ours_rrset, their_rrset)
    resolved = await ours(nsd, prefix, name)
    assert {r.address for r in resolved.records} == addresses(theirs)


async def test_rfc9460_https_passes_unchanged_like_bind(
    nsd: DnsProcess, bind: tuple[str, DnsProcess]
) -> None:
    """RFC 9460 §7.4: the HTTPS record (ipv4hint included) passes through untouched, and
    no AAAA is made from its ipv4hint."""
    prefix, server = bind
    qname = "svc." + ZONE
    theirs = await ask_tcp(server.host, server.port, qname, "HTTPS")
    mine = await our_server_reply(nsd, prefix, qname, "HTTPS")
    assert answer_set(mine) == answer_set(theirs)
    [(_, rdtype, rdata)] = answer_set(mine)
    assert rdtype == "HTTPS" and rdata == '1 . alpn="h2" ipv4hint="192.0.2.1"'
    assert not addresses(mine)


@pytest.mark.parametrize(
    ("name", "reason", "rcode"),
    [("nodata", "NODATA", "NOERROR"), ("missing", "NXDOMAIN", "NXDOMAIN")],
)
async def test_negative_answers_match(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess], name: str, reason: str, rcode: str
) -> None:
    prefix, server = unbound
    theirs = await unbound_aaaa(server, name)
    assert dns.rcode.to_text(theirs.rcode()) == rcode and not theirs.answer
    with pytest.raises(ResolutionError) as info:
        await ours(nsd, prefix, name)
    assert info.value.reason == reason


async def test_server_answer_matches_unbound_for_many(
    nsd: DnsProcess, unbound: tuple[str, DnsProcess]
) -> None:
    """100 A records: TC=1 over UDP from NSD, so proxy64 retries over TCP (RFC 7766 §5)."""
    prefix, server = unbound
    p = Nat64Prefix.parse(prefix)
    responder = DNS64Responder(DNS64Resolver(ResolverSettings(servers=(nsd.address,), prefix=p), p))
    wire = await responder.respond(
        dns.message.make_query("many." + ZONE, "AAAA").to_wire(), transport="tcp"
    )
    assert wire is not None
    mine = addresses(dns.message.from_wire(wire))
    assert len(mine) == 100 and mine == addresses(await unbound_aaaa(server, "many"))
