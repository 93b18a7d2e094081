"""The DNS64 server: UDP and TCP, truncation by EDNS size, FORMERR, REFUSED, the RFC 6147
§5.3.1 PTR CNAME, pass-through, and garbage that never crashes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import IPv4Address, ip_address
from typing import Literal

import dns.asyncbackend
import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.config import HostPort, ResolverSettings
from proxy64.net.dns_server import DNS64Responder, serve_dns64
from proxy64.net.resolver import DNS64Resolver
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import ZONE, FakeUpstream, answer, zone_handler

NSP = Nat64Prefix.parse("2001:db8:100::/40")
TRIO = dns.asyncbackend.get_backend("trio")
SERVER_ZONE = {
    **ZONE,
    ("many.example.", "A"): [f"many.example. 60 IN A 1.2.3.{i}" for i in range(1, 61)],
    ("t.example.", "TXT"): ['t.example. 60 IN TXT "hello"'],
    ("4.3.2.1.in-addr.arpa.", "PTR"): ["4.3.2.1.in-addr.arpa. 60 IN PTR www.example."],
}


@pytest.fixture
async def responder() -> AsyncIterator[DNS64Responder]:
    async with trio.open_nursery() as nursery:
        upstream = FakeUpstream(zone_handler(SERVER_ZONE))
        await nursery.start(upstream.serve)
        settings = ResolverSettings(servers=(upstream.address,), prefix=NSP, timeout=1.0)
        yield DNS64Responder(DNS64Resolver(settings, NSP))
        nursery.cancel_scope.cancel()


async def ask(
    responder: DNS64Responder, query: dns.message.Message, transport: str = "udp"
) -> dns.message.Message:
    wire = await responder.respond(
        query.to_wire(), transport="udp" if transport == "udp" else "tcp"
    )
    assert wire is not None
    return dns.message.from_wire(wire)


async def test_udp_and_tcp_serve_the_same_answer(responder: DNS64Responder) -> None:
    async with trio.open_nursery() as nursery:
        bound: HostPort = await nursery.start(
            serve_dns64, responder, HostPort(ip_address("127.0.0.1"), 0)
        )
        query = dns.message.make_query("www.example.", "AAAA")
        with trio.fail_after(5):
            udp = await dns.asyncquery.udp(query, "127.0.0.1", port=bound.port, backend=TRIO)
            tcp = await dns.asyncquery.tcp(query, "127.0.0.1", port=bound.port, backend=TRIO)
            # the server keeps answering after garbage on both transports
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                await sock.sendto(b"\x00\x01garbage-garbage", ("127.0.0.1", bound.port))
                reply = dns.message.from_wire(await sock.recv(512))
                assert reply.rcode() == dns.rcode.FORMERR
            stream = await trio.open_tcp_stream("127.0.0.1", bound.port)
            async with stream:
                await stream.send_all(b"\x00\x05\xff\xff\xff\xff\xff")
                assert await stream.receive_some(512) == b""  # unreadable header: closed
            again = await dns.asyncquery.udp(query, "127.0.0.1", port=bound.port, backend=TRIO)
        nursery.cancel_scope.cancel()
    expected = NSP.embed(IPv4Address("1.2.3.4"))
    for reply in (udp, tcp, again):
        assert [r.address for r in reply.answer[0]] == [str(expected)]
        assert reply.flags & dns.flags.RA


async def test_truncation_follows_client_udp_size(responder: DNS64Responder) -> None:
    """60 synthesized AAAA (~1.7 KB) exceed 512 and 1232 bytes: TC=1 on UDP, full on TCP."""
    plain = await ask(responder, dns.message.make_query("many.example.", "AAAA"))
    assert plain.flags & dns.flags.TC and not plain.answer and plain.edns < 0
    edns = await ask(
        responder, dns.message.make_query("many.example.", "AAAA", use_edns=0, payload=1232)
    )
    assert edns.flags & dns.flags.TC and edns.edns == 0  # EDNS0 kept in the reply
    big = await ask(
        responder, dns.message.make_query("many.example.", "AAAA", use_edns=0, payload=4096)
    )
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 60
    tcp = await ask(responder, dns.message.make_query("many.example.", "AAAA"), "tcp")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 60


async def test_zone_transfers_refused(responder: DNS64Responder) -> None:
    for rdtype in ("AXFR", "IXFR"):
        reply = await ask(responder, dns.message.make_query("example.", rdtype), "tcp")
        assert reply.rcode() == dns.rcode.REFUSED


async def test_rfc6147_5_3_1_ptr_inside_prefix_is_a_cname(responder: DNS64Responder) -> None:
    address = NSP.embed(IPv4Address("1.2.3.4"))
    reply = await ask(responder, dns.message.make_query(address.reverse_pointer + ".", "PTR"))
    cname, ptr = reply.answer
    assert cname.rdtype == dns.rdatatype.CNAME
    assert cname[0].target == dns.name.from_text("4.3.2.1.in-addr.arpa.")
    assert ptr.rdtype == dns.rdatatype.PTR and ptr[0].target == dns.name.from_text("www.example.")


async def test_other_types_pass_through(responder: DNS64Responder) -> None:
    reply = await ask(responder, dns.message.make_query("t.example.", "TXT"))
    assert reply.answer[0].rdtype == dns.rdatatype.TXT
    missing = await ask(responder, dns.message.make_query("nope.example.", "MX"))
    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_negative_aaaa_carries_soa(responder: DNS64Responder) -> None:
    reply = await ask(responder, dns.message.make_query("nope.example.", "AAAA"))
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].rdtype == dns.rdatatype.SOA


async def test_garbage_gets_formerr_or_nothing(responder: DNS64Responder) -> None:
    query = dns.message.make_query("www.example.", "AAAA").to_wire()
    formerr = await responder.respond(query[:12] + b"\x07broken", transport="udp")
    assert formerr is not None and dns.message.from_wire(formerr).rcode() == dns.rcode.FORMERR
    assert await responder.respond(b"\x01\x02", transport="udp") is None
    response = dns.message.make_response(dns.message.make_query("a.", "A")).to_wire()
    assert await responder.respond(response, transport="udp") is None
    two = dns.message.make_query("a.", "A")
    two.question.append(two.question[0])
    assert (await ask(responder, two)).rcode() == dns.rcode.FORMERR


def _mutations() -> st.SearchStrategy[bytes]:
    base = dns.message.make_query("www.example.", "AAAA", use_edns=0).to_wire()

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(data) - 1))
            data[index] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(0, len(data)))])

    return st.one_of(st.binary(max_size=80), mutate())


@settings(max_examples=150, deadline=None)
@given(wire=_mutations(), transport=st.sampled_from(["udp", "tcp"]))
def test_fuzz_respond_never_raises(wire: bytes, transport: str) -> None:
    """Any bytes: None, or a well-formed reply with QR=1 and the query's id."""

    async def refuse(query: dns.message.Message, _: str) -> dns.message.Message:
        return answer(query, rcode=dns.rcode.REFUSED)

    async def run() -> bytes | None:
        async with trio.open_nursery() as nursery:
            upstream = FakeUpstream(refuse)
            await nursery.start(upstream.serve)
            settings_ = ResolverSettings(servers=(upstream.address,), prefix=NSP, timeout=0.5)
            responder = DNS64Responder(DNS64Resolver(settings_, NSP))
            with trio.fail_after(5):
                reply = await responder.respond(
                    wire, transport="udp" if transport == "udp" else "tcp"
                )
            nursery.cancel_scope.cancel()
        return reply

    reply = trio.run(run)
    if reply is not None:
        parsed = dns.message.from_wire(reply)
        assert parsed.flags & dns.flags.QR
        assert parsed.id == int.from_bytes(wire[:2], "big")


async def test_rfc6147_5_5_validating_client_gets_real_data() -> None:
    """DO=1 and CD=1: no synthesis; the query goes upstream with DO and CD set."""
    flags_seen: list[tuple[bool, bool]] = []
    handle = zone_handler(SERVER_ZONE)

    async def record(
        query: dns.message.Message, transport: Literal["udp", "tcp"]
    ) -> dns.message.Message | None:
        flags_seen.append((bool(query.ednsflags & dns.flags.DO), bool(query.flags & dns.flags.CD)))
        return await handle(query, transport)

    async with trio.open_nursery() as nursery:
        upstream = FakeUpstream(record)
        await nursery.start(upstream.serve)
        settings_ = ResolverSettings(servers=(upstream.address,), prefix=NSP, timeout=1.0)
        responder = DNS64Responder(DNS64Resolver(settings_, NSP))
        validating = dns.message.make_query("www.example.", "AAAA", want_dnssec=True)
        validating.flags |= dns.flags.CD
        reply = await ask(responder, validating)
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
        assert flags_seen == [(True, True)]
        plain = await ask(responder, dns.message.make_query("www.example.", "AAAA"))
        assert plain.answer  # without DO+CD the same name is synthesized
        nursery.cancel_scope.cancel()


async def test_tcp_trickle_and_pipelining(responder: DNS64Responder) -> None:
    """RFC 7766 §6.2.1: queries may arrive one byte at a time, or several in one segment;
    each gets its reply, in order, on the same connection."""
    first = dns.message.make_query("www.example.", "AAAA")
    second = dns.message.make_query("v6.example.", "AAAA")
    framed = [len(q.to_wire()).to_bytes(2, "big") + q.to_wire() for q in (first, second)]
    async with trio.open_nursery() as nursery:
        bound: HostPort = await nursery.start(
            serve_dns64, responder, HostPort(ip_address("127.0.0.1"), 0)
        )
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", bound.port)
            async with stream:
                for byte in framed[0]:
                    await stream.send_all(bytes([byte]))
                await stream.send_all(framed[0] + framed[1])
                buffer = b""
                replies: list[dns.message.Message] = []
                while len(replies) < 3:
                    buffer += await stream.receive_some(65535)
                    while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                        size = int.from_bytes(buffer[:2], "big")
                        replies.append(dns.message.from_wire(buffer[2 : 2 + size]))
                        buffer = buffer[2 + size :]
        nursery.cancel_scope.cancel()
    assert [r.id for r in replies] == [first.id, first.id, second.id]
    assert str(replies[2].answer[0][0].address) == "2001:db8::6"


async def test_a_bug_becomes_servfail_not_a_crash(
    responder: DNS64Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(qname: dns.name.Name) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(responder.resolver, "lookup", broken)
    reply = await ask(responder, dns.message.make_query("www.example.", "AAAA"))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert (await ask(responder, dns.message.make_query("t.example.", "TXT"))).answer


async def test_unknown_edns_version_gets_badvers_and_other_opcodes_notimp(
    responder: DNS64Responder,
) -> None:
    future = await ask(responder, dns.message.make_query("www.example.", "AAAA", use_edns=1))
    assert future.rcode() == dns.rcode.BADVERS and future.edns == 0  # RFC 6891 §6.1.3
    notify = dns.message.make_query("example.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert (await ask(responder, notify)).rcode() == dns.rcode.NOTIMP


# --- upstream failures reach the client as SERVFAIL (as from BIND and Unbound) ----------


class GarbageUpstream(FakeUpstream):
    """Answers every query with bytes that are not a DNS message for it."""

    async def _reply(self, wire: bytes, transport: Literal["udp", "tcp"]) -> bytes | None:
        return wire[:2] + b"\x81\x80 not a dns message"


async def _refuse(query: dns.message.Message, _: str) -> dns.message.Message:
    return answer(query, rcode=dns.rcode.REFUSED)


async def _silent(query: dns.message.Message, _: str) -> None:
    return None


@pytest.mark.parametrize("upstream_kind", ["refused", "timeout", "garbage"])
@pytest.mark.parametrize(
    ("qname", "rdtype"),
    [
        ("www.example.", "AAAA"),  # the DNS64 path
        ("t.example.", "TXT"),  # pass-through
        ("svc.example.", "HTTPS"),  # pass-through (RFC 9460)
        ("4.3.2.1.in-addr.arpa.", "PTR"),  # pass-through
        ("4.0.3.0.2.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR"),
    ],
)
async def test_upstream_failure_is_servfail_never_refused(
    upstream_kind: str, qname: str, rdtype: str
) -> None:
    """An upstream that refuses us, stays silent or answers garbage: the client gets
    SERVFAIL (its question is fine; our upstream failed), with empty sections, in time."""
    upstream: FakeUpstream
    if upstream_kind == "garbage":
        upstream = GarbageUpstream(_refuse)
    else:
        upstream = FakeUpstream(_refuse if upstream_kind == "refused" else _silent)
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        settings_ = ResolverSettings(
            servers=(upstream.address,), prefix=NSP, timeout=0.3, lifetime=1.0
        )
        responder = DNS64Responder(DNS64Resolver(settings_, NSP))
        with trio.fail_after(5):
            reply = await ask(responder, dns.message.make_query(qname, rdtype))
        nursery.cancel_scope.cancel()
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert not reply.answer and not reply.authority
    assert upstream.seen or upstream_kind == "garbage"


async def test_rfc9460_https_record_passes_unchanged_without_synthesis() -> None:
    """RFC 9460 §7.4: a DNS64 must not synthesize from ipv4hint; the HTTPS RRset is passed
    as the upstream gave it, and an AAAA query for the name is synthesized from A only."""
    zone = {
        **SERVER_ZONE,
        ("svc.example.", "HTTPS"): ['svc.example. 60 IN HTTPS 1 . alpn="h2" ipv4hint=192.0.2.9'],
        ("svc.example.", "A"): ["svc.example. 60 IN A 1.2.3.9"],
    }
    async with trio.open_nursery() as nursery:
        upstream = FakeUpstream(zone_handler(zone))
        await nursery.start(upstream.serve)
        settings_ = ResolverSettings(servers=(upstream.address,), prefix=NSP, timeout=1.0)
        responder = DNS64Responder(DNS64Resolver(settings_, NSP))
        https = await ask(responder, dns.message.make_query("svc.example.", "HTTPS"))
        aaaa = await ask(responder, dns.message.make_query("svc.example.", "AAAA"))
        nursery.cancel_scope.cancel()
    [rrset] = https.answer
    assert rrset.rdtype == dns.rdatatype.HTTPS
    assert rrset[0].to_text() == '1 . alpn="h2" ipv4hint="192.0.2.9"'
    [synthesized] = aaaa.answer
    assert [r.address for r in synthesized] == [str(NSP.embed(IPv4Address("1.2.3.9")))]
