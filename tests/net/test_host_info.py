"""This host's facts for the dialer (proxy64/net/host_info.py): /etc/hosts re-read when it
changes, own addresses from /proc (parsers tested on recorded text, then on this host)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from proxy64.net.host_info import (
    FIB_TRIE,
    IF_INET6,
    HostInfo,
    parse_fib_trie_local,
    parse_if_inet6,
)

# /proc/net/fib_trie as Linux 6.x writes it (recorded with `cat /proc/net/fib_trie`).
FIB_TRIE_TEXT = """\
Main:
  +-- 0.0.0.0/0 3 0 4
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
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""
IF_INET6_TEXT = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
"""


def test_fib_trie_local_addresses() -> None:
    assert parse_fib_trie_local(FIB_TRIE_TEXT) == {
        IPv4Address("127.0.0.1"),
        IPv4Address("192.0.2.2"),
    }


def test_if_inet6_addresses() -> None:
    assert parse_if_inet6(IF_INET6_TEXT) == {
        IPv6Address("fe80::fc:ff:fe00:1"),
        IPv6Address("::1"),
        IPv6Address("fd00::2"),
    }


@given(st.text(max_size=400))
def test_parsers_never_raise(text: str) -> None:
    parse_fib_trie_local(text)
    parse_if_inet6(text)


def test_this_hosts_own_addresses_include_loopback() -> None:
    own = HostInfo(None).own_addresses()
    assert IPv4Address("127.0.0.1") in own, FIB_TRIE.read_text()[:500]
    ipv6 = parse_if_inet6(IF_INET6.read_text()) if IF_INET6.exists() else frozenset()
    assert ipv6 <= own  # IPv6 too, when the host has it


def test_hosts_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.1.1 intranet.example\n")
    now = [0.0]
    info = HostInfo(hosts, refresh=1.0, clock=lambda: now[0])
    assert info.lookup("Intranet.Example.") == (IPv4Address("10.1.1.1"),)
    hosts.write_text("10.2.2.2 intranet.example other.example\n")
    now[0] = 0.5  # within the refresh time: the file is not looked at
    assert info.lookup("intranet.example") == (IPv4Address("10.1.1.1"),)
    now[0] = 1.5
    assert info.lookup("intranet.example") == (IPv4Address("10.2.2.2"),)
    assert info.lookup("other.example") == (IPv4Address("10.2.2.2"),)
    hosts.unlink()
    now[0] = 3.0
    assert info.lookup("intranet.example") == ()  # gone: DNS decides again
    assert HostInfo(None).lookup("localhost") == ()
