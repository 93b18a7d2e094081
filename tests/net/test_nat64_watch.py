"""Following the network's NAT64 prefix while running: re-discovery timing (MockClock),
RA arrival and withdrawal (RFC 8781 §4), the RFC 9872 order of sources, the fallback,
the shared Nat64State and what the resolver and dialer make of a change."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address

import dns.message
import dns.rdatatype
import pytest
import trio
import trio.testing

from proxy64.config import HostPort, ResolverSettings
from proxy64.defaults import NAT64_REDISCOVER_MAX, NAT64_REDISCOVER_MIN, NAT64_RETRY
from proxy64.destination import Destination, Egress, EgressChoice
from proxy64.net.dialer import Dialer
from proxy64.net.nat64_state import Nat64Choice, Nat64State
from proxy64.net.nat64_watch import Nat64Sources, follow_nat64, watch_nat64
from proxy64.net.resolver import DNS64Resolver, Resolution
from proxy64.proto.pref64 import Announcement, Pref64
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import FakeUpstream, answer

A = Nat64Prefix.parse("2001:db8:a::/96")
B = Nat64Prefix.parse("2001:db8:b::/96")
P = Nat64Prefix.parse("2001:db8:64::/96")
WKP = "64:ff9b::/96"
DNS = (HostPort(IPv4Address("127.0.0.53"), 53),)
ROUTER = IPv6Address("fe80::1")


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Dns64Script:
    """RFC 7050 answers in turn (prefixes, TTL) or None (no server answered)."""

    def __init__(self, *answers: tuple[list[Nat64Prefix], int | None] | None) -> None:
        self.answers = list(answers)
        self.asked_at: list[float] = []

    async def __call__(
        self, servers: tuple[HostPort, ...]
    ) -> tuple[list[Nat64Prefix], int | None] | None:
        self.asked_at.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def sources_for(script: Dns64Script, egress: EgressChoice = EgressChoice.AUTO) -> Nat64Sources:
    return Nat64Sources(
        DNS,
        egress,
        rfc7050=script,
        open_ra_socket=None,  # RAs are handed to hear() directly here
        networkctl=None,
        monotonic=trio.current_time,
    )


def ra(prefix: Nat64Prefix, lifetime: int) -> Announcement:
    return Announcement(2, ROUTER, Pref64(prefix, lifetime))


async def started(
    nursery: trio.Nursery, script: Dns64Script, egress: EgressChoice = EgressChoice.AUTO
) -> tuple[Nat64State, Nat64Sources]:
    sources = sources_for(script, egress)
    state = Nat64State(await sources.startup(ra_wait=0))
    await nursery.start(watch_nat64, state, sources)
    return state, sources


async def test_rfc7050_3_rediscovery_when_the_ttl_runs_out(clock: trio.testing.MockClock) -> None:
    script = Dns64Script(([A], 30), ([B], 30))
    async with trio.open_nursery() as nursery:
        state, _ = await started(nursery, script)
        assert (state.prefix, state.choice.why) == (A, "RFC 7050 via 127.0.0.53:53")
        await trio.sleep(29.9)
        assert state.prefix == A and len(script.asked_at) == 1
        await trio.sleep(0.2)
        assert state.prefix == B and script.asked_at[1] == pytest.approx(30.0)
        nursery.cancel_scope.cancel()


async def test_rediscovery_is_bounded_below_and_above(clock: trio.testing.MockClock) -> None:
    script = Dns64Script(([A], 0), ([A], 10**9), ([A], 10**9))
    async with trio.open_nursery() as nursery:
        await started(nursery, script)
        await trio.sleep(NAT64_REDISCOVER_MIN + NAT64_REDISCOVER_MAX + 1)
        start = script.asked_at[0]
        assert [t - start for t in script.asked_at] == pytest.approx(
            [0, NAT64_REDISCOVER_MIN, NAT64_REDISCOVER_MIN + NAT64_REDISCOVER_MAX]
        )
        nursery.cancel_scope.cancel()


async def test_no_answer_keeps_the_prefix_and_retries(clock: trio.testing.MockClock) -> None:
    script = Dns64Script(([A], 10), None, ([B], 10))
    async with trio.open_nursery() as nursery:
        state, _ = await started(nursery, script)
        await trio.sleep(11)
        assert state.prefix == A and len(script.asked_at) == 2  # a DNS hiccup is no change
        await trio.sleep(NAT64_RETRY)
        assert state.prefix == B
        nursery.cancel_scope.cancel()


async def test_rfc9872_an_ra_wins_at_once_and_lifetime_zero_withdraws_it(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "proxy64.net.nat64_state")
    script = Dns64Script(([A], 3600))
    async with trio.open_nursery() as nursery:
        state, sources = await started(nursery, script)
        sources.hear("eth0", ra(P, 1800))
        await trio.testing.wait_all_tasks_blocked()
        assert (state.prefix, state.choice.why) == (P, "PREF64 from RA on eth0")
        assert state.choice.source == "pref64" and state.egress is Egress.NAT64
        sources.hear("eth0", ra(P, 1800))  # the router repeats itself: no change, no line
        await trio.testing.wait_all_tasks_blocked()
        sources.hear("eth0", ra(P, 0))
        await trio.testing.wait_all_tasks_blocked()
        assert state.prefix == A  # back to RFC 7050, whose answer is still fresh
        assert len(script.asked_at) == 1
        nursery.cancel_scope.cancel()
    changes = [r.getMessage() for r in caplog.records if "NAT64 prefix changed" in r.message]
    assert len(changes) == 2
    assert changes[0].startswith(f"NAT64 prefix changed: {A} (egress nat64) -> {P} (PREF64")


async def test_a_pref64_that_expires_falls_back_as_at_startup(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    script = Dns64Script(([], None))  # the DNS is no DNS64
    async with trio.open_nursery() as nursery:
        state, sources = await started(nursery, script)
        assert (str(state.prefix), state.egress, state.choice.source) == (
            WKP, Egress.EMBEDDED, "none"
        )  # fmt: skip
        sources.hear("eth0", ra(P, 120))
        await trio.testing.wait_all_tasks_blocked()
        assert (state.prefix, state.egress) == (P, Egress.NAT64)
        await trio.sleep(121)
        assert (str(state.prefix), state.egress) == (WKP, Egress.EMBEDDED)
        assert state.choice.why == (
            "none found: PREF64 withdrawn or expired; no NAT64 found via DNS 127.0.0.53:53"
        )
        nursery.cancel_scope.cancel()
    assert any("no NAT64 prefix found any more" in r.getMessage() for r in caplog.records)


async def test_egress_nat64_falls_back_to_the_wkp_assumed(clock: trio.testing.MockClock) -> None:
    script = Dns64Script(([], None))
    async with trio.open_nursery() as nursery:
        state, _ = await started(nursery, script, EgressChoice.NAT64)
        assert state.egress is Egress.NAT64 and state.choice.why.endswith("; assumed")
        nursery.cancel_scope.cancel()


async def test_a_pref64_seed_is_kept_until_it_expires(clock: trio.testing.MockClock) -> None:
    """A worker starts from the supervisor's PREF64 choice, whose RA it never hears."""
    script = Dns64Script(([A], 30))
    sources = sources_for(script)
    expires = trio.current_time() + 100
    seed = Nat64Choice(P, Egress.NAT64, "PREF64 from RA on eth0", expires, "pref64")
    state = Nat64State(seed)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_nat64, state, sources)
        await trio.sleep(99)
        assert state.prefix == P and not script.asked_at
        await trio.sleep(2)
        assert state.prefix == A
        nursery.cancel_scope.cancel()


# --- what readers of the state see -----------------------------------------------------


def test_state_logs_one_line_per_change_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "proxy64.net.nat64_state")
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "RFC 7050 via x"))
    seen: list[tuple[Nat64Prefix, Nat64Prefix]] = []
    state.on_change(lambda old, new: seen.append((old.prefix, state.prefix)))
    assert not state.update(Nat64Choice(A, Egress.NAT64, "RFC 7050 via x", 5.0))
    assert state.update(Nat64Choice(B, Egress.NAT64, "RFC 7050 via x"))
    assert seen == [(A, A)]  # listeners run before readers see the new prefix
    assert state.generation == 1 and len(caplog.records) == 1


async def test_the_dialer_embeds_in_the_prefix_of_the_moment() -> None:
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "given"))
    resolver = DNS64Resolver(ResolverSettings(servers=DNS, prefix=None), state)
    dialer = Dialer(resolver, state)
    literal = Destination(IPv4Address("192.0.2.1"), 80)
    assert dialer.targets_now(literal)[0].address == IPv6Address("2001:db8:a::c000:201")  # type: ignore[index]
    state.update(Nat64Choice(B, Egress.NAT64, "RFC 7050 via x"))
    assert dialer.prefix == B and resolver.prefix == B
    assert dialer.targets_now(literal)[0].address == IPv6Address("2001:db8:b::c000:201")  # type: ignore[index]
    with pytest.raises(TypeError):
        Dialer(resolver, state, Egress.NAT64)


@pytest.fixture
async def a_only() -> AsyncIterator[FakeUpstream]:
    """Every name has only A 192.0.2.7; the first A query for each slow*.* is answered
    0.3 s late (the server answers one query at a time)."""
    delayed: set[str] = set()

    async def handle(query: dns.message.Message, transport: str) -> dns.message.Message:
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            name = question.name.to_text()
            if name.startswith("slow") and name not in delayed:
                delayed.add(name)
                await trio.sleep(0.3)
            return answer(query, f"{question.name} 3600 IN A 192.0.2.7")
        return answer(query)

    upstream = FakeUpstream(handle)
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        yield upstream
        nursery.cancel_scope.cancel()


async def test_rfc6147_5_1_7_the_cache_never_serves_the_old_prefix(a_only: FakeUpstream) -> None:
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "given"))
    resolver = DNS64Resolver(ResolverSettings(servers=(a_only.address,), prefix=None), state)
    first = await resolver.resolve("www.example.test")
    assert [r.address for r in first.records] == [IPv6Address("2001:db8:a::c000:207")]
    assert (await resolver.resolve("www.example.test")).from_cache
    state.update(Nat64Choice(B, Egress.NAT64, "PREF64 from RA on eth0"))
    after = await resolver.resolve("www.example.test")
    assert not after.from_cache
    assert [r.address for r in after.records] == [IPv6Address("2001:db8:b::c000:207")]


async def test_an_answer_synthesized_during_a_change_is_cached_only_under_the_new_prefix(
    a_only: FakeUpstream,
) -> None:
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "given"))
    resolver = DNS64Resolver(ResolverSettings(servers=(a_only.address,), prefix=None), state)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolver.resolve, "slow1.example.test")
        await trio.sleep(0.1)  # the lookup is in flight with prefix A, its A answer late
        state.update(Nat64Choice(B, Egress.NAT64, "PREF64 from RA on eth0"))
    cached = resolver.resolve_cached("slow1.example.test")
    assert cached is not None
    assert [r.address for r in cached.records] == [IPv6Address("2001:db8:b::c000:207")]


async def test_a_lookup_after_a_change_does_not_join_one_from_before(
    a_only: FakeUpstream,
) -> None:
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "given"))
    resolver = DNS64Resolver(ResolverSettings(servers=(a_only.address,), prefix=None), state)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolver.resolve, "slow2.example.test")
        await trio.sleep(0.1)
        state.update(Nat64Choice(B, Egress.NAT64, "PREF64 from RA on eth0"))
        late = await resolver.resolve("slow2.example.test")
    assert [r.address for r in late.records] == [IPv6Address("2001:db8:b::c000:207")]


async def test_an_answer_synthesized_during_a_change_is_asked_again_under_the_new_prefix(
    a_only: FakeUpstream,
) -> None:
    """The caller whose lookup was in flight gets the new prefix's addresses: the old
    prefix's would be dialed as native IPv6 (the dialer no longer sees them as NAT64)."""
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "given"))
    resolver = DNS64Resolver(ResolverSettings(servers=(a_only.address,), prefix=None), state)
    dialer = Dialer(resolver, state)
    got: list[Resolution] = []

    async def resolve() -> None:
        got.append(await resolver.resolve("slow4.example.test"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolve)
        await trio.sleep(0.1)  # the lookup is in flight with prefix A, its A answer late
        state.update(Nat64Choice(B, Egress.NAT64, "PREF64 from RA on eth0"))
    assert [r.address for r in got[0].records] == [IPv6Address("2001:db8:b::c000:207")]
    assert all(r.synthesized for r in got[0].records)
    targets = await dialer.targets(Destination("slow4.example.test", 80))
    assert [(t.address, t.egress) for t in targets] == [
        (IPv6Address("2001:db8:b::c000:207"), Egress.NAT64)
    ]


async def test_rfc7050_rediscovery_against_a_dns64_whose_prefix_changes() -> None:
    """Real RFC 7050 queries (TTL 2 s) to a server that changes its synthesis prefix."""
    prefix = ["2001:db8:a::"]

    async def dns64(query: dns.message.Message, transport: str) -> dns.message.Message:
        name = query.question[0].name
        if query.question[0].rdtype == dns.rdatatype.AAAA:
            return answer(query, f"{name} 2 IN AAAA {prefix[0]}c000:aa")
        return answer(query)

    upstream = FakeUpstream(dns64)
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        sources = Nat64Sources((upstream.address,), open_ra_socket=None, networkctl=None)
        state = Nat64State(await sources.startup(ra_wait=0))
        assert state.prefix == A and state.choice.why == f"RFC 7050 via {upstream.address}"
        changed = trio.Event()
        state.on_change(lambda old, new: changed.set())
        await nursery.start(watch_nat64, state, sources)
        prefix[0] = "2001:db8:b::"
        with trio.fail_after(NAT64_REDISCOVER_MIN + 5):
            await changed.wait()
        assert state.prefix == B
        nursery.cancel_scope.cancel()


async def test_a_failing_watcher_leaves_the_server_its_prefix(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def broken(servers: tuple[HostPort, ...]) -> tuple[list[Nat64Prefix], int | None]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("a bug in a source")
        return [A], 5

    sources = Nat64Sources(DNS, rfc7050=broken, open_ra_socket=None, networkctl=None,
                           monotonic=trio.current_time)  # fmt: skip
    state = Nat64State(await sources.startup(ra_wait=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(follow_nat64, state, sources)
        await trio.sleep(10)  # the second discovery raises; nothing reaches this nursery
    assert state.prefix == A and len(calls) == 2
    assert any("watcher stopped; keeping 2001:db8:a::/96" in r.getMessage() for r in caplog.records)


def test_the_readiness_report_judges_with_the_prefix_in_use() -> None:
    from proxy64.app import report_follows
    from proxy64.report import ReadinessReport

    report = ReadinessReport(prefix=A.network)
    state = Nat64State(Nat64Choice(A, Egress.NAT64, "RFC 7050 via x"))
    report_follows(report, state)
    state.update(Nat64Choice(B, Egress.NAT64, "PREF64 from RA on eth0"))
    assert report.prefix == B.network
