"""This host's facts for the dialer (proxy64/net/host_info.py): /etc/hosts re-read when it
changes, own addresses from /proc (the parsers' tests: tests/proto/test_self_dial.py)."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from proxy64.net.host_addresses import local_addresses
from proxy64.net.host_info import HostInfo


def test_this_hosts_own_addresses_include_loopback() -> None:
    own = HostInfo(None).own_addresses()
    assert IPv4Address("127.0.0.1") in own
    assert own == local_addresses()  # what loop protection reads, IPv6 included


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
