"""Dialer.connect_now()/finish(): connect() without waiting, by the same rules (planning,
destination policy, egress, error mapping) — or None when it would have to wait."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import dns.name
import pytest
import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import AddressMappingError, DialCause, DialError, ResolutionError
from proxy64.net.dial_types import Dialed, PendingDial
from proxy64.net.dialer import Dialer
from proxy64.net.resolver import DNS64Resolver, Resolution, ResolvedAddress
from proxy64.policy import DestinationPolicy
from proxy64.proto.dns64 import Dns64Answer, Outcome
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.fakes import FakeResolver
from tests.helpers.streams import closed_port

WKP = Nat64Prefix.parse("64:ff9b::/96")
NSP = Nat64Prefix.parse("2001:db8:64::/96")


def dns64_resolver(answers: dict[str, Outcome]) -> DNS64Resolver:
    """A real DNS64Resolver whose cache holds `answers` (::1 for ANSWER); no server used."""
    settings = ResolverSettings(servers=(HostPort(ip_address("127.0.0.1"), 9),), prefix=NSP)
    resolver = DNS64Resolver(settings, NSP)
    for name, outcome in answers.items():
        qname = dns.name.from_text(name)
        addresses = (IPv6Address("::1"),) if outcome is Outcome.ANSWER else ()
        answer = Dns64Answer(qname, outcome, (), qname, addresses, False, 60)
        resolver.cache.put(answer, trio.current_time())
    return resolver


async def test_ipv6_literal_connects_inside_connect_now() -> None:
    listener = (await trio.open_tcp_listeners(0, host="::1"))[0]
    port = listener.socket.getsockname()[1]
    dialer = Dialer(FakeResolver({}), NSP, Egress.NAT64)
    async with listener:
        # A loopback handshake completes inside connect(2) unless the kernel defers its
        # receive processing (a loaded machine, now and then): a few tries, one must.
        for _ in range(20):
            dialed = dialer.connect_now(Destination(ip_address("::1"), port))
            assert dialed is not None
            if not isinstance(dialed, PendingDial):
                break
            with trio.fail_after(5):  # finished and accepted: the next accept is the next's
                await (await dialer.finish(dialed)).stream.aclose()
                await (await listener.accept()).aclose()
        assert isinstance(dialed, Dialed), "20 loopback connects, none completed"
        with trio.fail_after(5):
            accepted = await listener.accept()
            await dialed.stream.send_all(b"now")
            assert await accepted.receive_some(10) == b"now"
        assert dialed.reached is Reached.NATIVE_IPV6 and dialed.egress is None
        assert isinstance(dialed.stream, trio.SocketStream)
        assert dialed.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await dialed.stream.aclose()
        await accepted.aclose()


async def test_strict_wkp_refusal_is_raised_without_any_dial() -> None:
    policy = DestinationPolicy(strict_wkp=True)
    dialer = Dialer(FakeResolver({}), WKP, Egress.NAT64, policy=policy)
    with pytest.raises(AddressMappingError, match=r"--strict-wkp.*RFC 6052 §3\.1"):
        dialer.connect_now(Destination(IPv4Address("10.1.2.3"), 80))


async def test_uncached_name_answers_none_and_asks_nobody() -> None:
    resolver = FakeResolver({"a.test": [("::1", False)]})
    dialer = Dialer(resolver, NSP, Egress.NAT64)
    assert dialer.connect_now(Destination("a.test", 80)) is None
    assert resolver.asked == []


async def test_dns64_resolver_cache_is_read_without_waiting() -> None:
    listener = (await trio.open_tcp_listeners(0, host="::1"))[0]
    port = listener.socket.getsockname()[1]
    resolver = dns64_resolver({"hit.test": Outcome.ANSWER, "gone.test": Outcome.NXDOMAIN})
    dialer = Dialer(resolver, NSP, Egress.NAT64)
    async with listener:
        dialed = dialer.connect_now(Destination("hit.test", port))
        assert not isinstance(dialed, PendingDial) and dialed is not None
        assert dialed.remote == (IPv6Address("::1"), port)
        await dialed.stream.aclose()
    with pytest.raises(ResolutionError, match="NXDOMAIN"):  # a cached failure, as resolve()
        dialer.connect_now(Destination("gone.test", port))
    assert dialer.connect_now(Destination("other.test", port)) is None


class CachedResolver(FakeResolver):
    def resolve_cached(self, name: str) -> Resolution:
        records = tuple(ResolvedAddress(IPv6Address(a), s, 60) for a, s in self.answers[name])
        return Resolution(name, (), records, True)


async def test_several_targets_are_left_to_the_race() -> None:
    resolver = CachedResolver({"two.test": [("::1", False), ("::2", False)]})
    dialer = Dialer(resolver, NSP, Egress.NAT64)
    assert dialer.connect_now(Destination("two.test", 80)) is None  # RFC 8305: connect()
    assert resolver.asked == []


async def test_refused_port_maps_like_connect() -> None:
    port = closed_port("127.0.0.1")
    dialer = Dialer(FakeResolver({}), Nat64Prefix.parse("2001:db8:64::/96"), Egress.EMBEDDED)
    with trio.fail_after(5), pytest.raises(DialError) as info:
        result = dialer.connect_now(Destination(IPv4Address("127.0.0.1"), port))
        assert isinstance(result, PendingDial)  # loopback refuses after connect() returns
        await dialer.finish(result)
    assert info.value.cause is DialCause.REFUSED
