"""NameMemory: addresses learned from our own DNS64 answers, bounded, never raising."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import dns.message
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.flow.names import NameMemory


def reply(name: str, *addresses: str) -> bytes:
    query = dns.message.make_query(name, "AAAA")
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text(name, 60, "IN", "AAAA", *addresses))
    return answer.to_wire()


def test_learns_every_address_of_the_answer() -> None:
    memory = NameMemory(10)
    memory.learn(reply("V4only.Example.", "64:ff9b::c000:201", "64:ff9b::c000:202"))
    assert memory.name_of(IPv6Address("64:ff9b::c000:202")) == "v4only.example"
    assert memory.name_of(IPv6Address("64:ff9b::1")) is None


def test_bounded_oldest_forgotten_first() -> None:
    memory = NameMemory(2)
    for n in range(3):
        memory.learn(reply(f"n{n}.example.", f"2001:db8::{n + 1}"))
    assert len(memory) == 2
    assert memory.name_of(IPv6Address("2001:db8::1")) is None
    assert memory.name_of(IPv6Address("2001:db8::3")) == "n2.example"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_teaches_nothing_and_never_raises(data: bytes) -> None:
    memory = NameMemory(5)
    memory.learn(data)
    assert len(memory) <= 5


def test_a_queries_are_counted_per_name_and_bounded() -> None:
    """A replies teach addresses too (an AF_INET flow is named after them) and count as
    A lookups; AAAA replies do not count."""
    memory = NameMemory(2)
    for name in ("One.Example.", "one.example.", "two.example.", "three.example."):
        query = dns.message.make_query(name, "A")
        answer = dns.message.make_response(query)
        answer.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
        memory.learn(answer.to_wire())
    memory.learn(reply("one.example.", "2001:db8::1"))
    assert dict(memory.a_lookups) == {"one.example": 2, "two.example": 1}  # three: over limit
    assert str(memory.name_of(IPv4Address("192.0.2.1"))) == "three.example"
