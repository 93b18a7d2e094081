"""Building the DNS64 server's replies: pure functions from a query to wire bytes.

The server (proxy64/net/dns_server.py) reads a datagram or a TCP message, asks the
resolver, and uses these to shape the reply: an error reply from a bare header when the
query cannot be parsed (RFC 1035 §4.1.1 FORMERR), the answer of a DNS64 lookup, a
pass-through of an upstream answer, the RFC 6147 §5.3.1 PTR CNAME, and truncation to the
client's UDP size (RFC 1035 §4.2.1 512 bytes, or the EDNS0 size, RFC 6891 §6.2.5).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from proxy64.defaults import (
    DNS_EDNS_PAYLOAD,
    DNS_TCP_MAX_MESSAGE,
    DNS_UDP_PAYLOAD_WITHOUT_EDNS,
    PTR_CNAME_TTL,
)
from proxy64.proto.dns64 import Dns64Answer, Outcome
from proxy64.proto.rfc6052 import Nat64Prefix

HEADER = struct.Struct("!HHHHHH")  # RFC 1035 §4.1.1
_QR = 0x8000
_OPCODE_MASK = 0x7800
_RD = 0x0100
_IP6_ARPA = dns.name.from_text("ip6.arpa.")

_OUTCOME_RCODE = {
    Outcome.ANSWER: dns.rcode.NOERROR,
    Outcome.NODATA: dns.rcode.NOERROR,
    Outcome.NXDOMAIN: dns.rcode.NXDOMAIN,
    Outcome.SERVFAIL: dns.rcode.SERVFAIL,
    Outcome.TIMEOUT: dns.rcode.SERVFAIL,
}


def header_error_reply(wire: bytes, rcode: dns.rcode.Rcode = dns.rcode.FORMERR) -> bytes | None:
    """A reply built from the 12-byte header alone, for a query that cannot be parsed.

    None (drop) when there is no full header or the message is itself a response: answering
    a response could start a loop between two servers.
    """
    if len(wire) < HEADER.size:
        return None
    ident, flags = struct.unpack_from("!HH", wire)
    if flags & _QR:
        return None
    out_flags = _QR | (flags & _OPCODE_MASK) | (flags & _RD) | (rcode & 0xF)
    return HEADER.pack(ident, out_flags, 0, 0, 0, 0)


def make_reply(
    query: dns.message.Message, rcode: dns.rcode.Rcode = dns.rcode.NOERROR
) -> dns.message.Message:
    """A response to query: same id and question, RA set, EDNS0 kept when the client used it."""
    reply = dns.message.make_response(query, recursion_available=True, our_payload=DNS_EDNS_PAYLOAD)
    reply.set_rcode(rcode)
    return reply


def fill_dns64(reply: dns.message.Message, answer: Dns64Answer) -> None:
    """Put a DNS64 lookup into reply: chain + AAAA, or the negative answer with its SOA."""
    reply.set_rcode(_OUTCOME_RCODE[answer.outcome])
    reply.answer.extend(answer.chain)
    rrset = answer.aaaa_rrset()
    if rrset is not None:
        reply.answer.append(rrset)
    elif answer.soa is not None:
        reply.authority.append(answer.soa)  # RFC 2308 §3: negative answers carry the SOA


# Upstream RCODEs a recursive server passes on; any other (REFUSED, NOTIMP, FORMERR,
# SERVFAIL) says the upstream could not answer, which the client hears as SERVFAIL, as from
# BIND and Unbound: the upstream's REFUSED is about us, not about the client's question.
_PASSED_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN)


def fill_passthrough(reply: dns.message.Message, upstream: dns.message.Message) -> None:
    """Copy an upstream answer's RCODE and sections (EDNS and TSIG stay our own); an
    upstream error becomes SERVFAIL with empty sections. Every record type, SVCB and
    HTTPS included, is copied unchanged: RFC 9460 §7.4 forbids a DNS64 to synthesize
    from their ipv4hint."""
    if upstream.rcode() not in _PASSED_RCODES:
        reply.set_rcode(dns.rcode.SERVFAIL)
        return
    reply.set_rcode(upstream.rcode())
    reply.answer.extend(upstream.answer)
    reply.authority.extend(upstream.authority)
    reply.additional.extend(upstream.additional)


def ptr_address(qname: dns.name.Name) -> IPv6Address | None:
    """The IPv6 address of a full 32-nibble ip6.arpa name (RFC 3596 §2.5), else None."""
    if not qname.is_subdomain(_IP6_ARPA):
        return None
    labels = qname.relativize(_IP6_ARPA).labels
    if len(labels) != 32 or any(len(label) != 1 for label in labels):
        return None
    try:
        nibbles = "".join(label.decode("ascii") for label in reversed(labels))
        return IPv6Address(int(nibbles, 16))
    except (UnicodeDecodeError, ValueError):
        return None


def ptr_cname_target(qname: dns.name.Name, prefix: Nat64Prefix) -> dns.name.Name | None:
    """RFC 6147 §5.3.1: ip6.arpa inside the prefix → the in-addr.arpa name of the IPv4."""
    address = ptr_address(qname)
    if address is None or not prefix.contains(address):
        return None
    ipv4: IPv4Address = prefix.extract(address)
    return dns.name.from_text(ipv4.reverse_pointer + ".")


def ptr_cname_rrset(qname: dns.name.Name, target: dns.name.Name) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(
        qname, PTR_CNAME_TTL, dns.rdataclass.IN, dns.rdatatype.CNAME, [target.to_text()]
    )


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP reply the client accepts: 512 without EDNS0, else its payload size."""
    if query.edns < 0:
        return DNS_UDP_PAYLOAD_WITHOUT_EDNS
    return max(DNS_UDP_PAYLOAD_WITHOUT_EDNS, min(int(query.payload), DNS_TCP_MAX_MESSAGE))


def render(reply: dns.message.Message, limit: int) -> bytes:
    """Wire form within limit; a reply that does not fit is sent empty with TC=1 (RFC 2181 §9)."""
    try:
        return reply.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(
            _question_only(reply), recursion_available=True, our_payload=DNS_EDNS_PAYLOAD
        )
        truncated.flags |= dns.flags.TC
        truncated.set_rcode(reply.rcode())
        if reply.edns < 0:
            truncated.use_edns(False)
        return truncated.to_wire(max_size=limit)


def _question_only(reply: dns.message.Message) -> dns.message.Message:
    """A query carrying reply's id, question and EDNS, to build the truncated reply from."""
    query = dns.message.Message(id=reply.id)
    query.flags = reply.flags & ~(dns.flags.QR | dns.flags.AA | dns.flags.TC)
    query.question = list(reply.question)
    if reply.edns >= 0:
        query.use_edns(reply.edns, payload=reply.payload)
    return query
