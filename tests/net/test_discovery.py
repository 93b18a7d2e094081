"""RFC 7050 discovery over the network: against Unbound DNS64 (one per prefix length),
against a plain authoritative server (no DNS64: nothing found), and with no server at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest
import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.errors import ResolutionError
from proxy64.net.discovery import discover_prefixes, discover_with_ttl, probe_prefix
from proxy64.net.nat64_watch import resolver_choice
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import DnsProcess, FakeUpstream, start_nsd, start_unbound_dns64

DATA = Path(__file__).parent.parent / "data" / "dns"


@pytest.fixture(scope="module")
def nsd() -> Iterator[DnsProcess]:
    with start_nsd({"ipv4only.arpa.": (DATA / "ipv4only.arpa.zone").read_text()}) as server:
        yield server


@pytest.mark.parametrize(
    "prefix",
    [
        "64:ff9b::/96",
        "2001:db8::/32",
        "2001:db8:100::/40",
        "2001:db8:122::/48",
        "2001:db8:122:300::/56",
        "2001:db8:122:344::/64",
        "2001:db8:122:344::/96",
    ],
)
async def test_rfc7050_discovers_unbound_prefix(nsd: DnsProcess, prefix: str) -> None:
    with start_unbound_dns64(prefix, nsd.address, probe_zone="ipv4only.arpa.") as unbound:
        with trio.fail_after(10):
            found = await discover_prefixes((unbound.address,))
    assert found == [Nat64Prefix.parse(prefix)]


async def test_no_dns64_finds_nothing(nsd: DnsProcess) -> None:
    """A server without DNS64 has no AAAA for ipv4only.arpa: [] and the WKP fallback line."""
    with trio.fail_after(10):
        assert await discover_prefixes((nsd.address,)) == []
        settings = ResolverSettings(servers=(nsd.address,), prefix=None)
        choice, note = await resolver_choice(settings, ra_wait=0)
    assert choice.prefix.is_well_known and choice.source == "none"
    assert note is not None and note.startswith("no NAT64 prefix found (")
    assert note.endswith(f"; no NAT64 found via DNS {nsd.address}); using 64:ff9b::/96")


async def test_rfc7050_3_the_ttl_of_the_answer_comes_back(nsd: DnsProcess) -> None:
    with start_unbound_dns64("2001:db8:64::/96", nsd.address, probe_zone="ipv4only.arpa.") as dns64:
        with trio.fail_after(10):
            found, ttl = await discover_with_ttl((dns64.address,))
    assert found == [Nat64Prefix.parse("2001:db8:64::/96")]
    assert ttl is not None and 0 < ttl <= 3600  # the zone's A TTL, copied by Unbound


async def test_no_server_answers_raises_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def silent(query: object, transport: str) -> None:
        return None

    async with trio.open_nursery() as nursery:
        upstream = FakeUpstream(silent)
        await nursery.start(upstream.serve)
        with pytest.raises(ResolutionError) as info:
            await discover_prefixes((upstream.address,), timeout=3)
        assert info.value.reason == "TIMEOUT"
        nursery.cancel_scope.cancel()


async def test_configured_prefix_skips_discovery() -> None:
    prefix = Nat64Prefix.parse("2001:db8:100::/40")
    choice, note = await resolver_choice(ResolverSettings(servers=(), prefix=prefix))
    assert (choice.prefix, choice.why, note) == (prefix, "given", None)


async def test_probe_reports_success_and_failure() -> None:
    """The probe dials the IPv4 target embedded in the prefix; ::ffff:0:0/96 is not a NAT64
    prefix but makes Linux dial the IPv4 address itself, so loopback works as the target.
    """
    mapped = Nat64Prefix.parse("::ffff:0:0/96")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, lambda s: s.aclose(), listeners)
        target = HostPort(ip_address("127.0.0.1"), port)
        with trio.fail_after(5):
            assert await probe_prefix(mapped, target) is None
            for listener in listeners:
                await listener.aclose()
            nursery.cancel_scope.cancel()
    with trio.fail_after(5):
        failure = await probe_prefix(mapped, target)
    assert failure is not None and "refused" in failure.lower()
