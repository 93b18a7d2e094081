"""RFC 5452 §9.1 against a hostile fake DNS server on loopback: replies with the wrong ID,
the wrong question, QR=0, from another source port, or that are not DNS at all, are
ignored until the real answer arrives; a lookup that only ever gets garbage says
"malformed"; random IDs and source ports (RFC 5452 §9.2); a closed port says "refused".
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address, ip_address

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest
import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.errors import ResolutionError
from proxy64.net.discovery import discover_prefixes
from proxy64.net.resolver import DNS64Resolver, query_servers
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import answer, unique_loopback

NSP = Nat64Prefix.parse("2001:db8:100::/40")
SOA = "example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 300"

# What a hostile server sends before (or instead of) the real answer, given the query.
Forgery = Callable[[dns.message.Message], bytes]


def wrong_id(query: dns.message.Message) -> bytes:
    reply = _real(query)
    reply.id = (query.id + 1) % 65536
    return reply.to_wire()


def wrong_question(query: dns.message.Message) -> bytes:
    other = dns.message.make_query("evil.example.", query.question[0].rdtype)
    other.id = query.id
    reply = answer(other, "evil.example. 60 IN A 6.6.6.6")
    return reply.to_wire()


def qr_zero(query: dns.message.Message) -> bytes:
    reply = _real(query)
    reply.flags &= ~dns.flags.QR
    return reply.to_wire()


def garbage(query: dns.message.Message) -> bytes:
    return query.id.to_bytes(2, "big") + b"\x81\x80 not a DNS message"


def _real(query: dns.message.Message) -> dns.message.Message:
    if query.question[0].rdtype == dns.rdatatype.A:
        return answer(query, f"{query.question[0].name} 60 IN A 1.2.3.4")
    if query.question[0].name == dns.name.from_text("ipv4only.arpa."):
        return answer(
            query,
            "ipv4only.arpa. 60 IN AAAA 64:ff9b::c000:aa",
            "ipv4only.arpa. 60 IN AAAA 64:ff9b::c000:ab",
        )
    return answer(query, authority=(SOA,))


class HostileServer:
    """A UDP DNS server that sends forgeries (each from the server's socket, and the
    first also from a second socket: right address, wrong port) before the real answer,
    or never answers when real is False."""

    def __init__(self, forgeries: list[Forgery], *, real: bool = True) -> None:
        self.forgeries = forgeries
        self.real = real
        self.host = unique_loopback()
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.queries: list[tuple[int, int]] = []  # (query ID, client source port)

    @property
    def address(self) -> HostPort:
        return HostPort(ip_address(self.host), self.sock.getsockname()[1])

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.sock.bind((self.host, 0))
        await self.other.bind((self.host, 0))
        task_status.started()
        with self.sock, self.other:
            while True:
                wire, client = await self.sock.recvfrom(65535)
                query = dns.message.from_wire(wire)
                self.queries.append((query.id, client[1]))
                if self.forgeries:
                    # Right source address, wrong source port: RFC 5452 §9.1.
                    await self.other.sendto(_real(query).to_wire(), client)
                for forge in self.forgeries:
                    await self.sock.sendto(forge(query), client)
                if self.real:
                    await self.sock.sendto(_real(query).to_wire(), client)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def start(nursery: trio.Nursery, server: HostileServer) -> HostileServer:
    await nursery.start(server.serve)
    return server


def resolver(server: HostPort, *, timeout: float = 1.0) -> DNS64Resolver:
    settings = ResolverSettings(servers=(server,), prefix=NSP, timeout=timeout, lifetime=4.0)
    return DNS64Resolver(settings, NSP)


async def test_rfc5452_9_1_forged_replies_ignored_until_the_answer(nursery: trio.Nursery) -> None:
    server = await start(nursery, HostileServer([wrong_id, wrong_question, qr_zero, garbage]))
    with trio.fail_after(3):
        resolution = await resolver(server.address).resolve("www.example")
    assert [r.address for r in resolution.records] == [NSP.embed(IPv4Address("1.2.3.4"))]
    assert len(server.queries) == 2  # AAAA then A, each answered once: no retry needed


@pytest.mark.parametrize("forge", [wrong_id, wrong_question, qr_zero, garbage])
async def test_rfc5452_9_1_each_forgery_alone_is_ignored(
    nursery: trio.Nursery, forge: Forgery
) -> None:
    server = await start(nursery, HostileServer([forge, forge, forge]))
    with trio.fail_after(3):
        resolution = await resolver(server.address).resolve("www.example")
    assert resolution.records[0].address == NSP.embed(IPv4Address("1.2.3.4"))


async def test_only_garbage_is_reported_as_malformed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    server = await start(nursery, HostileServer([garbage], real=False))
    with pytest.raises(ResolutionError) as info:
        await resolver(server.address).resolve("www.example")
    assert info.value.reason == "TIMEOUT"
    message = str(info.value)
    assert f"{server.address} sent only malformed answers" in message
    assert "timed out" in message


async def test_only_forgeries_are_reported_as_ignored(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    server = await start(nursery, HostileServer([wrong_id, qr_zero], real=False))
    with pytest.raises(ResolutionError) as info:
        await resolver(server.address).resolve("www.example")
    assert "2 not matching the query (ID, question or QR; RFC 5452 §9.1)" in str(info.value)


async def test_closed_port_is_reported_as_refused() -> None:
    host = unique_loopback()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    # Nothing listens on host:port now: the kernel answers ICMP port unreachable.
    with trio.fail_after(2), pytest.raises(ResolutionError) as info:
        await resolver(HostPort(ip_address(host), port), timeout=5.0).resolve("www.example")
    assert f"{host}:{port} refused the query" in str(info.value)


async def test_rfc5452_9_2_random_ids_and_source_ports(nursery: trio.Nursery) -> None:
    server = await start(nursery, HostileServer([]))
    name = dns.name.from_text("www.example.")
    for _ in range(20):
        await query_servers((server.address,), name, dns.rdatatype.A, per_try=1.0, lifetime=2.0)
    ids = {query_id for query_id, _ in server.queries}
    ports = {port for _, port in server.queries}
    # 20 draws from 65,536 IDs and from the ephemeral port range: collisions are rare.
    assert len(ids) >= 18
    assert len(ports) >= 18


async def test_rfc7050_discovery_ignores_forgeries(nursery: trio.Nursery) -> None:
    server = await start(nursery, HostileServer([wrong_id, wrong_question, qr_zero, garbage]))
    with trio.fail_after(3):
        prefixes = await discover_prefixes((server.address,), timeout=2.0)
    assert [str(p) for p in prefixes] == ["64:ff9b::/96"]
