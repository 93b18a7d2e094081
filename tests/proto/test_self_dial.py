"""Loop protection rules (proxy64/proto/self_dial.py): which dials reach our listeners,
and the parsers of the kernel's address tables (tables, trickle-free text, hypothesis)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.proto.self_dial import OwnListeners, parse_fib_trie_local, parse_if_inet6, plain

HOST = [ip_address("192.0.2.7"), ip_address("2001:db8::7")]


def own(*listeners: str) -> OwnListeners:
    pairs = []
    for text in listeners:
        host, _, port = text.rpartition(":")
        pairs.append((ip_address(host.strip("[]")), int(port)))
    return OwnListeners.of(pairs, HOST)


@pytest.mark.parametrize(
    ("listeners", "address", "port", "loops"),
    [
        (["127.0.0.1:1080"], "127.0.0.1", 1080, True),
        (["127.0.0.1:1080"], "127.0.0.1", 1081, False),
        (["127.0.0.1:1080"], "127.0.0.2", 1080, False),  # nothing listens there
        (["127.0.0.1:1080"], "0.0.0.0", 1080, True),  # connect(0.0.0.0) is loopback
        (["127.0.0.1:1080"], "::ffff:127.0.0.1", 1080, True),  # IPv4-mapped
        (["127.0.0.1:1080"], "::1", 1080, False),  # an IPv4 listener
        (["[::1]:1080"], "::1", 1080, True),
        (["[::1]:1080"], "::", 1080, True),
        (["0.0.0.0:8080"], "127.9.9.9", 8080, True),  # wildcard: every local IPv4
        (["0.0.0.0:8080"], "192.0.2.7", 8080, True),  # this host's own address
        (["0.0.0.0:8080"], "192.0.2.8", 8080, False),  # another host
        (["0.0.0.0:8080"], "2001:db8::7", 8080, False),  # IPv4-only wildcard
        (["[::]:8080"], "2001:db8::7", 8080, True),
        (["[::]:8080"], "::1", 8080, True),
        (["[::]:8080"], "2001:db8::8", 8080, False),
        (["192.0.2.7:3128"], "192.0.2.7", 3128, True),
        (["192.0.2.7:3128"], "127.0.0.1", 3128, False),
    ],
)
def test_which_dials_reach_our_listeners(
    listeners: list[str], address: str, port: int, loops: bool
) -> None:
    reached = own(*listeners).reached(ip_address(address), port)
    assert (reached is not None) == loops


def test_no_listeners_never_loop() -> None:
    assert OwnListeners().reached(IPv4Address("127.0.0.1"), 1080) is None


def test_plain_unmaps_ipv4_mapped_only() -> None:
    assert plain(IPv6Address("::ffff:10.0.0.1")) == IPv4Address("10.0.0.1")
    assert plain(IPv6Address("64:ff9b::a00:1")) == IPv6Address("64:ff9b::a00:1")


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 192.0.2.7
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 192.0.2.7
        /32 host LOCAL
"""

IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000007 02 40 00 80     eth0
fe800000000000000000000000000001 02 40 20 80     eth0
"""


def test_fib_trie_local_addresses() -> None:
    assert parse_fib_trie_local(FIB_TRIE) == [IPv4Address("127.0.0.1"), IPv4Address("192.0.2.7")]


def test_if_inet6_addresses() -> None:
    assert parse_if_inet6(IF_INET6) == [
        IPv6Address("::1"),
        IPv6Address("2001:db8::7"),
        IPv6Address("fe80::1"),
    ]


@given(st.text(max_size=400))
def test_hypothesis_parsers_take_any_text(text: str) -> None:
    """Invariant: any text parses into addresses (never an exception): the files are the
    kernel's, but a parser of outside text never raises."""
    for address in parse_fib_trie_local(text):
        assert isinstance(address, IPv4Address)
    for address6 in parse_if_inet6(text):
        assert isinstance(address6, IPv6Address)


@given(st.lists(st.ip_addresses(), max_size=5), st.ip_addresses(), st.integers(1, 65535))
def test_hypothesis_a_listener_is_reached_by_its_own_address(
    local: list[IPv4Address | IPv6Address], address: IPv4Address | IPv6Address, port: int
) -> None:
    """Invariant: a specific listener is always reached by its own address and port, and
    never by another port."""
    listeners = OwnListeners.of([(address, port)], local)
    assert listeners.reached(address, port) is not None
    assert listeners.reached(address, port % 65535 + 1) is None
