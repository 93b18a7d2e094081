"""DNS64Resolver against fake upstream servers: failover, TCP fallback, RFC 6147 §5.1.3,
cache expiry, negative caching and the cache bound. Time runs on trio's MockClock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Literal

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.errors import ResolutionError
from proxy64.net.dns_cache import Dns64Cache
from proxy64.net.resolver import DNS64Resolver, Resolution, servers_from_resolv_conf
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import SOA, FakeUpstream, Handler, answer, zone_handler

NSP = Nat64Prefix.parse("2001:db8:100::/40")


async def start(nursery: trio.Nursery, handler: Handler) -> FakeUpstream:
    upstream = FakeUpstream(handler)
    await nursery.start(upstream.serve)
    return upstream


def make_resolver(*servers: HostPort, cache: Dns64Cache | None = None) -> DNS64Resolver:
    settings = ResolverSettings(servers=servers, prefix=NSP, timeout=1.0, lifetime=4.0)
    return DNS64Resolver(settings, NSP, cache=cache)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def test_synthesizes_from_a(nursery: trio.Nursery) -> None:
    up = await start(nursery, zone_handler())
    resolution = await make_resolver(up.address).resolve("www.example")
    assert [r.address for r in resolution.records] == [NSP.embed(IPv4Address("1.2.3.4"))]
    assert resolution.records[0].synthesized
    assert resolution.records[0].ttl == 120  # min(A 120, SOA negative 300)
    assert [q[:2] for q in up.seen] == [("www.example.", "AAAA"), ("www.example.", "A")]


async def test_native_aaaa_skips_a(nursery: trio.Nursery) -> None:
    up = await start(nursery, zone_handler())
    resolution = await make_resolver(up.address).resolve("v6.example")
    assert resolution.records[0].address == IPv6Address("2001:db8::6")
    assert not resolution.records[0].synthesized
    assert [q[1] for q in up.seen] == ["AAAA"]


async def test_failover_on_timeout(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    dead = await start(nursery, zone_handler(drop=lambda *a: True))
    alive = await start(nursery, zone_handler())
    resolution = await make_resolver(dead.address, alive.address).resolve("www.example")
    assert resolution.records[0].synthesized
    assert dead.seen and alive.seen


async def test_failover_on_servfail_and_refused(nursery: trio.Nursery) -> None:
    bad = await start(nursery, zone_handler(rcode_for=lambda n, t: dns.rcode.SERVFAIL))
    refusing = await start(nursery, zone_handler(rcode_for=lambda n, t: dns.rcode.REFUSED))
    good = await start(nursery, zone_handler())
    resolver = make_resolver(bad.address, refusing.address, good.address)
    resolution = await resolver.resolve("v6.example")
    assert resolution.records[0].address == IPv6Address("2001:db8::6")
    assert len(bad.seen) == len(refusing.seen) == 1


async def test_no_server_answers_is_timeout(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    dead = await start(nursery, zone_handler(drop=lambda *a: True))
    with pytest.raises(ResolutionError) as info:
        await make_resolver(dead.address).resolve("www.example")
    assert info.value.reason == "TIMEOUT"
    assert str(info.value) == (
        f"DNS timeout: no usable answer for www.example; {dead.address} timed out after 1 s"
    )


async def test_truncated_udp_retried_over_tcp(nursery: trio.Nursery) -> None:
    many = [f"big.example. 60 IN A 1.2.{i // 250}.{i % 250 + 1}" for i in range(150)]

    async def handle(query: dns.message.Message, transport: str) -> dns.message.Message:
        if query.question[0].rdtype == dns.rdatatype.AAAA:
            return answer(query, authority=(SOA,))
        if transport == "udp":
            reply = answer(query)
            reply.flags |= dns.flags.TC
            return reply
        return answer(query, *many)

    up = await start(nursery, handle)
    resolution = await make_resolver(up.address).resolve("big.example")
    assert len(resolution.records) == 150
    assert ("big.example.", "A", "tcp") in up.seen


@pytest.mark.parametrize("failure", ["servfail", "timeout"])
async def test_rfc6147_5_1_3_aaaa_failure_falls_back_to_a(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, failure: str
) -> None:
    handler = zone_handler(
        drop=lambda n, t, tr: failure == "timeout" and t == "AAAA",
        rcode_for=lambda n, t: (
            dns.rcode.SERVFAIL if failure == "servfail" and t == "AAAA" else None
        ),
    )
    up = await start(nursery, handler)
    resolution = await make_resolver(up.address).resolve("www.example")
    assert resolution.records[0].address == NSP.embed(IPv4Address("1.2.3.4"))
    assert resolution.records[0].ttl == 120  # no SOA from AAAA: min(120, 600)


async def test_nxdomain_raises_and_is_not_synthesized(nursery: trio.Nursery) -> None:
    up = await start(nursery, zone_handler())
    with pytest.raises(ResolutionError) as info:
        await make_resolver(up.address).resolve("missing.example")
    assert info.value.reason == "NXDOMAIN"
    assert [q[1] for q in up.seen] == ["AAAA"]  # RFC 6147 §5.1.2: no A query


async def test_cache_honours_ttl(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    up = await start(nursery, zone_handler())
    resolver = make_resolver(up.address)
    first = await resolver.resolve("www.example")
    assert not first.from_cache
    await trio.sleep(100)
    second = await resolver.resolve("WWW.example.")
    assert second.from_cache and second.records[0].ttl == 20
    assert len(up.seen) == 2
    await trio.sleep(21)
    third = await resolver.resolve("www.example")
    assert not third.from_cache and third.records[0].ttl == 120
    assert len(up.seen) == 4


async def test_negative_answers_are_cached(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    up = await start(nursery, zone_handler())
    resolver = make_resolver(up.address)
    for _ in range(3):
        with pytest.raises(ResolutionError):
            await resolver.resolve("missing.example")
    assert len(up.seen) == 1  # NXDOMAIN cached for min(SOA TTL, MINIMUM) = 300 s
    await trio.sleep(301)
    with pytest.raises(ResolutionError):
        await resolver.resolve("missing.example")
    assert len(up.seen) == 2


async def test_servfail_is_not_cached(nursery: trio.Nursery) -> None:
    up = await start(nursery, zone_handler(rcode_for=lambda n, t: dns.rcode.SERVFAIL))
    resolver = make_resolver(up.address)
    for _ in range(2):
        with pytest.raises(ResolutionError) as info:
            await resolver.resolve("www.example")
        assert info.value.reason == "SERVFAIL"
    assert len(up.seen) == 4


async def test_cache_is_bounded(nursery: trio.Nursery) -> None:
    zone = {
        (f"n{i}.example.", "AAAA"): [f"n{i}.example. 600 IN AAAA 2001:db8::{i}"] for i in range(5)
    }
    up = await start(nursery, zone_handler(zone))
    cache = Dns64Cache(max_entries=3)
    resolver = make_resolver(up.address, cache=cache)
    for i in range(5):
        await resolver.resolve(f"n{i}.example")
    assert len(cache) == 3
    assert (await resolver.resolve("n4.example")).from_cache
    assert not (await resolver.resolve("n0.example")).from_cache  # least recently used: gone


async def test_query_passes_other_types(nursery: trio.Nursery) -> None:
    zone = {("t.example.", "TXT"): ['t.example. 60 IN TXT "hello"']}
    up = await start(nursery, zone_handler(zone))
    response = await make_resolver(up.address).query("t.example.", "TXT")
    assert response.answer[0].rdtype == dns.rdatatype.TXT


def test_servers_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
    servers = servers_from_resolv_conf(conf)
    assert [str(s) for s in servers] == ["192.0.2.1:53", "[fe80::1]:53"]
    assert [str(s) for s in servers_from_resolv_conf(tmp_path / "absent")] == ["127.0.0.1:53"]


async def test_concurrent_lookups_share_one_exchange(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    handle = zone_handler()

    async def slow(
        query: dns.message.Message, transport: Literal["udp", "tcp"]
    ) -> dns.message.Message | None:
        await trio.sleep(0.5)
        return await handle(query, transport)

    up = await start(nursery, slow)
    resolver = make_resolver(up.address)
    results: list[Resolution] = []

    async def one() -> None:
        results.append(await resolver.resolve("www.example"))

    async with trio.open_nursery() as group:
        for _ in range(5):
            group.start_soon(one)
    assert len(results) == 5
    assert {r.records for r in results} == {results[0].records}
    assert len(up.seen) == 2  # one AAAA and one A for five askers


async def test_cancelled_first_asker_does_not_strand_the_others(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    handle = zone_handler()

    async def slow(
        query: dns.message.Message, transport: Literal["udp", "tcp"]
    ) -> dns.message.Message | None:
        await trio.sleep(0.5)
        return await handle(query, transport)

    up = await start(nursery, slow)
    resolver = make_resolver(up.address)
    results: list[Resolution] = []

    async def impatient() -> None:
        with trio.move_on_after(0.1):  # cancelled while its AAAA query is in flight
            await resolver.resolve("www.example")

    async def patient() -> None:
        await trio.sleep(0.01)  # arrives while the first lookup is pending
        results.append(await resolver.resolve("www.example"))

    with trio.fail_after(10):
        async with trio.open_nursery() as group:
            group.start_soon(impatient)
            group.start_soon(patient)
    assert results[0].records[0].synthesized


async def test_cached_answer_expires_with_its_cname(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A CNAME with TTL 30 in front of an AAAA with TTL 100: the cached name lasts 30 s."""
    zone = {
        ("alias.example.", "AAAA"): [
            "alias.example. 30 IN CNAME v6.example.",
            "v6.example. 100 IN AAAA 2001:db8::6",
        ]
    }
    up = await start(nursery, zone_handler(zone))
    resolver = make_resolver(up.address)
    first = await resolver.resolve("alias.example")
    assert first.chain == ("v6.example",) and first.records[0].ttl == 100
    await trio.sleep(20)
    assert (await resolver.resolve("alias.example")).records[0].ttl == 10
    await trio.sleep(11)
    assert not (await resolver.resolve("alias.example")).from_cache
