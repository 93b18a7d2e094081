"""hosts(5) parsing (proxy64/hosts.py): table tests and a fuzz test."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from hypothesis import given
from hypothesis import strategies as st

from proxy64.hosts import host_key, parse_hosts

DEBIAN = """\
127.0.0.1\tlocalhost
127.0.1.1\tbuild.example.org\tbuild

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
10.9.8.7  intranet.example intranet   # a comment after names
2001:db8::7 Intranet.Example.
fe80::1%eth0 scoped.example
not-an-address bogus.example
10.9.8.7 intranet.example
"""


def test_debian_style_file() -> None:
    table = parse_hosts(DEBIAN)
    assert table["localhost"] == (IPv4Address("127.0.0.1"), IPv6Address("::1"))
    assert table["build"] == (IPv4Address("127.0.1.1"),)
    assert table["ip6-loopback"] == (IPv6Address("::1"),)
    # case and final dot do not matter; order of the file, duplicates once
    assert table["intranet.example"] == (IPv4Address("10.9.8.7"), IPv6Address("2001:db8::7"))
    assert table["intranet"] == (IPv4Address("10.9.8.7"),)
    assert "scoped.example" not in table  # a zone index: no interface to give it
    assert "bogus.example" not in table and "#" not in table
    assert "a" not in table and "comment" not in table


def test_empty_and_comment_only() -> None:
    assert parse_hosts("") == {}
    assert parse_hosts("# nothing\n   \n127.0.0.1\n") == {}


def test_host_key() -> None:
    assert host_key("Intranet.Example.") == "intranet.example"


LINES = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda a, names: f"{a} {' '.join(names)}",
            st.one_of(
                st.ip_addresses().map(str), st.text(alphabet="0123456789abcdef:.%", max_size=20)
            ),
            st.lists(st.text(alphabet="abcXYZ.-_#", min_size=1, max_size=12), max_size=4),
        ),
    ),
    max_size=20,
)


@given(LINES)
def test_fuzz_only_valid_entries_come_out(lines: list[str]) -> None:
    """Any text: no exception; every key is a lower-case name without final dot and every
    value a non-empty tuple of distinct parsed addresses."""
    table = parse_hosts("\n".join(lines))
    for name, addresses in table.items():
        assert name and name == host_key(name) and "#" not in name
        assert addresses and len(set(addresses)) == len(addresses)
        assert all(ip_address(str(a)) == a for a in addresses)
