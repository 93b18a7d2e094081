"""RFC 6147 DNS64 policy (proxy64/proto/dns64.py) and reply shaping (dns64_reply.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.defaults import DNS64_EXCLUDED
from proxy64.proto.dns64 import (
    Dns64Answer,
    NeedA,
    Outcome,
    classify_aaaa,
    follow_chain,
    synthesize_from_a,
    synthesized_ttl,
)
from proxy64.proto.dns64_reply import (
    header_error_reply,
    make_reply,
    ptr_address,
    ptr_cname_target,
    render,
    udp_limit,
)
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.dnsservers import answer

WKP = Nat64Prefix.parse("64:ff9b::/96")
NSP = Nat64Prefix.parse("2001:db8:100::/40")
Q = dns.name.from_text("www.example.")
SOA = "example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 300"


def query(rdtype: str = "AAAA", name: str = "www.example.") -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def need_a(step: Dns64Answer | NeedA) -> NeedA:
    assert isinstance(step, NeedA), step
    return step


def test_rfc6147_5_1_7_ttl_rule() -> None:
    assert synthesized_ttl(3600, 300) == 300
    assert synthesized_ttl(60, 300) == 60
    assert synthesized_ttl(3600, None) == 600  # no SOA: at most 600 s
    assert synthesized_ttl(30, None) == 30


def test_rfc6147_5_1_1_native_aaaa_is_answered() -> None:
    step = classify_aaaa(answer(query(), "www.example. 900 IN AAAA 2001:db8::1"), Q, DNS64_EXCLUDED)
    assert isinstance(step, Dns64Answer)
    assert step.outcome is Outcome.ANSWER
    assert step.addresses == (IPv6Address("2001:db8::1"),)
    assert not step.synthesized and step.ttl == 900


def test_rfc6147_5_1_4_excluded_aaaa_counts_as_absent() -> None:
    response = answer(query(), "www.example. 900 IN AAAA ::ffff:1.2.3.4")
    step = need_a(classify_aaaa(response, Q, DNS64_EXCLUDED))
    a = answer(query("A"), "www.example. 900 IN A 1.2.3.4")
    result = synthesize_from_a(a, Q, WKP, step)
    assert result.addresses == (IPv6Address("64:ff9b::102:304"),)
    assert result.synthesized and result.ttl == 600  # no SOA with the AAAA answer


def test_rfc6147_5_1_4_exclusion_set_is_configurable() -> None:
    response = answer(
        query(), "www.example. 900 IN AAAA 2001:db8::1", "www.example. 900 IN AAAA 2001:db9::1"
    )
    step = classify_aaaa(response, Q, (IPv6Network("2001:db8::/32"),))
    assert isinstance(step, Dns64Answer)
    assert step.addresses == (IPv6Address("2001:db9::1"),)


def test_rfc6147_5_1_2_nxdomain_is_not_synthesized() -> None:
    response = answer(query(), rcode=dns.rcode.NXDOMAIN, authority=(SOA,))
    step = classify_aaaa(response, Q, DNS64_EXCLUDED)
    assert isinstance(step, Dns64Answer)
    assert step.outcome is Outcome.NXDOMAIN
    assert step.ttl == 300 and step.soa is not None


def test_rfc6147_5_1_3_servfail_and_timeout_fall_through_to_a() -> None:
    for response in (answer(query(), rcode=dns.rcode.SERVFAIL), None):
        step = need_a(classify_aaaa(response, Q, DNS64_EXCLUDED))
        a = answer(query("A"), "www.example. 100 IN A 1.2.3.4")
        result = synthesize_from_a(a, Q, NSP, step)
        assert result.outcome is Outcome.ANSWER
        assert result.addresses == (NSP.embed(IPv4Address("1.2.3.4")),)
        assert result.ttl == 100


def test_rfc6147_5_1_7_ttl_from_negative_aaaa_soa() -> None:
    step = need_a(classify_aaaa(answer(query(), authority=(SOA,)), Q, DNS64_EXCLUDED))
    assert step.soa_ttl == 300  # min(SOA TTL 3600, MINIMUM 300), RFC 2308 §5
    result = synthesize_from_a(answer(query("A"), "www.example. 3600 IN A 1.2.3.4"), Q, NSP, step)
    assert result.ttl == 300


def test_rfc6147_5_1_5_chain_kept_and_owner_from_a_rrset() -> None:
    step = need_a(classify_aaaa(answer(query(), "www.example. 50 IN CNAME real.example."), Q, ()))
    a = answer(
        query("A"),
        "www.example. 50 IN CNAME real.example.",
        "real.example. 500 IN A 1.2.3.4",
    )
    result = synthesize_from_a(a, Q, WKP, step)
    assert result.owner == dns.name.from_text("real.example.")
    assert result.chain_names == (dns.name.from_text("real.example."),)
    rrset = result.aaaa_rrset()
    assert rrset is not None and rrset.name == result.owner


def test_dname_is_followed() -> None:
    response = answer(
        query("A"),
        "example. 60 IN DNAME example.net.",
        "www.example.net. 60 IN A 1.2.3.4",
    )
    chain, owner, rrset = follow_chain(response, Q, dns.rdatatype.A)
    assert owner == dns.name.from_text("www.example.net.")
    assert rrset is not None and len(chain) == 1


def test_cname_loop_stops() -> None:
    response = answer(
        query("A"), "www.example. 60 IN CNAME b.example.", "b.example. 60 IN CNAME www.example."
    )
    _, _, rrset = follow_chain(response, Q, dns.rdatatype.A)
    assert rrset is None


@pytest.mark.parametrize(
    "ipv4", ["10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.169.254", "0.0.0.0", "192.168.1.1"]
)
def test_rfc6052_3_1_non_global_synthesized_under_wkp_like_bind(ipv4: str) -> None:
    """Every A record is synthesized under every prefix, as BIND and Unbound do: RFC 6052
    §3.1 leaves the refusal of non-global IPv4 to the translator."""
    step = need_a(classify_aaaa(answer(query(), authority=(SOA,)), Q, ()))
    a = answer(query("A"), f"www.example. 60 IN A {ipv4}", "www.example. 60 IN A 1.2.3.4")
    result = synthesize_from_a(a, Q, WKP, step)
    assert result.outcome is Outcome.ANSWER
    assert set(result.addresses) == {WKP.embed(IPv4Address(ipv4)), IPv6Address("64:ff9b::102:304")}
    only_private = answer(query("A"), f"www.example. 60 IN A {ipv4}")
    for prefix in (WKP, NSP):
        alone = synthesize_from_a(only_private, Q, prefix, step)
        assert alone.addresses == (prefix.embed(IPv4Address(ipv4)),)


def test_rfc7050_2_2_ipv4only_arpa_is_synthesized_under_wkp() -> None:
    """192.0.0.170/171 are not global, yet RFC 7050 §2.2 exists for a DNS64 to synthesize
    them: a client doing discovery against proxy64's DNS64 must find 64:ff9b::/96."""
    name = dns.name.from_text("ipv4only.arpa.")
    soa = "ipv4only.arpa. 3600 IN SOA ns.arpa. host.arpa. 1 3600 600 86400 300"
    step = need_a(classify_aaaa(answer(query(name="ipv4only.arpa."), authority=(soa,)), name, ()))
    a = answer(
        query("A", "ipv4only.arpa."),
        "ipv4only.arpa. 60 IN A 192.0.0.170",
        "ipv4only.arpa. 60 IN A 192.0.0.171",
    )
    assert synthesize_from_a(a, name, WKP, step).addresses == (
        IPv6Address("64:ff9b::c000:aa"),
        IPv6Address("64:ff9b::c000:ab"),
    )
    # No name is special: the same addresses elsewhere are synthesized too.
    other = answer(query("A"), "www.example. 60 IN A 192.0.0.170")
    plain = need_a(classify_aaaa(answer(query(), authority=(SOA,)), Q, ()))
    assert synthesize_from_a(other, Q, WKP, plain).outcome is Outcome.ANSWER


def test_rfc6147_5_1_6_mapped_limits_what_is_synthesized() -> None:
    step = need_a(classify_aaaa(answer(query(), authority=(SOA,)), Q, ()))
    a = answer(query("A"), "www.example. 60 IN A 1.2.3.4", "www.example. 60 IN A 5.6.7.8")
    result = synthesize_from_a(a, Q, NSP, step, (IPv4Network("5.0.0.0/8"),))
    assert result.addresses == (NSP.embed(IPv4Address("5.6.7.8")),)


def test_nodata_everywhere_is_nodata_with_aaaa_soa() -> None:
    step = need_a(classify_aaaa(answer(query(), authority=(SOA,)), Q, ()))
    result = synthesize_from_a(answer(query("A"), authority=(SOA,)), Q, WKP, step)
    assert result.outcome is Outcome.NODATA and result.ttl == 300 and result.soa is not None


def test_a_nxdomain_and_a_timeout() -> None:
    step = need_a(classify_aaaa(None, Q, ()))
    nx = answer(query("A"), rcode=dns.rcode.NXDOMAIN, authority=(SOA,))
    assert synthesize_from_a(nx, Q, WKP, step).outcome is Outcome.NXDOMAIN
    assert synthesize_from_a(None, Q, WKP, step).outcome is Outcome.TIMEOUT
    servfail = answer(query("A"), rcode=dns.rcode.SERVFAIL)
    assert synthesize_from_a(servfail, Q, WKP, step).outcome is Outcome.SERVFAIL


def test_synthesize_all_uses_a_only_with_600_cap() -> None:
    step = NeedA.without_aaaa(Q)
    result = synthesize_from_a(answer(query("A"), "www.example. 3600 IN A 1.2.3.4"), Q, NSP, step)
    assert result.synthesized and result.ttl == 600


# --- replies ---------------------------------------------------------------------------


def test_rfc6147_5_3_1_ptr_inside_prefix_maps_to_in_addr_arpa() -> None:
    address = NSP.embed(IPv4Address("192.0.2.33"))
    qname = dns.name.from_text(address.reverse_pointer + ".")
    assert ptr_address(qname) == address
    assert ptr_cname_target(qname, NSP) == dns.name.from_text("33.2.0.192.in-addr.arpa.")
    outside = dns.name.from_text(IPv6Address("2001:db9::1").reverse_pointer + ".")
    assert ptr_cname_target(outside, NSP) is None
    assert ptr_address(dns.name.from_text("1.0.ip6.arpa.")) is None  # not a full name
    assert ptr_address(dns.name.from_text("x.example.")) is None


def test_udp_limit_512_without_edns_else_payload() -> None:
    assert udp_limit(dns.message.make_query("a.", "A")) == 512
    assert udp_limit(dns.message.make_query("a.", "A", use_edns=0, payload=1400)) == 1400
    assert udp_limit(dns.message.make_query("a.", "A", use_edns=0, payload=100)) == 512


def test_render_truncates_with_tc() -> None:
    q = dns.message.make_query("many.example.", "AAAA")
    reply = make_reply(q)
    reply.answer.append(
        answer(q, *(f"many.example. 60 IN AAAA 2001:db8::{i:x}" for i in range(1, 60))).answer[0]
    )
    small = dns.message.from_wire(render(reply, 512))
    assert small.flags & dns.flags.TC and not small.answer and small.id == q.id
    assert small.edns < 0  # the client sent no EDNS0, so none comes back
    big = dns.message.from_wire(render(reply, 65535))
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 59


def test_header_error_reply() -> None:
    q = dns.message.make_query("a.", "A").to_wire()
    reply = header_error_reply(q[:12] + b"\xff")
    assert reply is not None
    parsed = dns.message.from_wire(reply)
    assert parsed.rcode() == dns.rcode.FORMERR and parsed.id == int.from_bytes(q[:2], "big")
    assert header_error_reply(b"\x00" * 11) is None  # no header: drop
    response = dns.message.make_response(dns.message.make_query("a.", "A")).to_wire()
    assert header_error_reply(response) is None  # never answer a response


@given(st.binary(max_size=64))
def test_header_error_reply_is_valid_or_none(wire: bytes) -> None:
    reply = header_error_reply(wire)
    if reply is not None:
        parsed = dns.message.from_wire(reply)
        assert parsed.flags & dns.flags.QR
        assert parsed.id == int.from_bytes(wire[:2], "big")


@given(st.integers(min_value=0, max_value=(1 << 128) - 1).map(IPv6Address))
def test_ptr_address_round_trips(address: IPv6Address) -> None:
    assert ptr_address(dns.name.from_text(address.reverse_pointer + ".")) == address


PREFIXES = [WKP, NSP, *(Nat64Prefix.parse(p) for p in ("2001:db8::/32", "2001:db8:122:344::/64"))]


@given(
    st.lists(
        st.integers(min_value=0, max_value=(1 << 32) - 1).map(IPv4Address), min_size=1, max_size=20
    ),
    st.sampled_from(PREFIXES),
)
def test_synthesis_embeds_every_a_record(
    a_addresses: list[IPv4Address], prefix: Nat64Prefix
) -> None:
    records = [f"www.example. 60 IN A {a}" for a in a_addresses]
    step = need_a(classify_aaaa(answer(query(), authority=(SOA,)), Q, DNS64_EXCLUDED))
    result = synthesize_from_a(answer(query("A"), *records), Q, prefix, step)
    assert result.outcome is Outcome.ANSWER
    assert {prefix.extract(a) for a in result.addresses} == set(a_addresses)
    assert all(prefix.contains(a) for a in result.addresses)
