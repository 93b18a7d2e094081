"""PREF64 (RFC 8781 §4) options, the rtnetlink RTM_NEWNDUSEROPT messages that carry them,
networkctl's JSON, and the table of live prefixes."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.errors import PacketError
from proxy64.proto.pref64 import (
    MAX_LIFETIME,
    PLC_LENGTHS,
    Announcement,
    Pref64,
    Pref64Table,
    networkd_pref64,
    parse_pref64_option,
    pref64_announcements,
)
from proxy64.proto.rfc6052 import Nat64Prefix

# One datagram as Linux 6.18 delivered it to a socket joined to RTNLGRP_ND_USEROPT, for an
# RA from fe80::1 on ifindex 7 carrying PREF64 2001:db8:64:1::/64 with Scaled Lifetime 100
# (scapy: ICMPv6ND_RA()/ICMPv6NDOptPREF64(prefix="2001:db8:64:1::", plc=1,
# scaledlifetime=100) sent on a veth; recv() on the netlink socket; bytes.hex()).
KERNEL_DATAGRAM = bytes.fromhex(
    "440000004400000000000000000000000a0010000700000086000000000000002602032120010db8"
    "006400010000000014000100fe800000000000000000000000000001"
)


def option(prefix: bytes, plc: int, scaled: int, units: int = 2, kind: int = 38) -> bytes:
    body = struct.pack("!BBH", kind, units, (scaled << 3) | plc) + prefix[:12]
    return body.ljust(units * 8, b"\0")[: units * 8]


ROUTER = IPv6Address("fe80::1")


def nduseropt(
    options: bytes, *, ifindex: int = 3, icmp_type: int = 134, family: int = 10,
    router: IPv6Address | None = ROUTER, msg_type: int = 68, opts_len: int | None = None,
) -> bytes:  # fmt: skip
    """An RTM_NEWNDUSEROPT message in host byte order, as the kernel builds it."""
    length = len(options) if opts_len is None else opts_len
    payload = struct.pack("=BBHiBBHI", family, 0, length, ifindex, icmp_type, 0, 0, 0)
    payload += options + bytes(-len(options) % 4)
    if router is not None:
        payload += struct.pack("=HH", 20, 1) + router.packed
    return struct.pack("=IHHII", 16 + len(payload), msg_type, 0, 0, 0) + payload


def test_rfc8781_4_the_kernel_datagram() -> None:
    assert pref64_announcements(KERNEL_DATAGRAM) == [
        Announcement(
            7,
            IPv6Address("fe80::1"),
            Pref64(Nat64Prefix.parse("2001:db8:64:1::/64"), 800),
        )
    ]


@pytest.mark.parametrize(("plc", "length"), list(enumerate(PLC_LENGTHS)))
def test_rfc8781_4_prefix_length_codes(plc: int, length: int) -> None:
    prefix = IPv6Network(("2001:db8:6400::", length), strict=False)
    parsed = parse_pref64_option(option(prefix.network_address.packed, plc, 225))
    assert parsed == Pref64(Nat64Prefix(prefix), 1800)


def test_rfc8781_4_bits_beyond_the_length_are_ignored() -> None:
    parsed = parse_pref64_option(option(bytes.fromhex("20010db8ffff") + bytes(6), 5, 1))
    assert parsed is not None and str(parsed.prefix) == "2001:db8::/32"


@pytest.mark.parametrize("plc", [6, 7])
def test_rfc8781_4_undefined_plc_is_ignored(plc: int) -> None:
    assert parse_pref64_option(option(bytes(12), plc, 10)) is None


@pytest.mark.parametrize("units", [1, 3, 4, 255])
def test_rfc8781_4_a_length_other_than_2_is_ignored(units: int) -> None:
    # "The receiver MUST ignore the PREF64 option if the Length field value is not 2."
    wrong = option(bytes.fromhex("0064ff9b") + bytes(8), 0, 75, units=units)
    assert parse_pref64_option(wrong) is None
    right = option(bytes.fromhex("0064ff9b") + bytes(8), 0, 75, units=2)
    assert parse_pref64_option(right) == Pref64(Nat64Prefix.parse("64:ff9b::/96"), 600)


def test_rfc8781_4_lifetime_zero_and_maximum() -> None:
    assert parse_pref64_option(option(bytes(12), 0, 0)) == Pref64(Nat64Prefix.parse("::/96"), 0)
    top = parse_pref64_option(option(bytes(12), 0, 8191))
    assert top is not None and top.lifetime == MAX_LIFETIME == 65528


def test_rfc6052_2_2_the_u_octet_lies_beyond_every_length_below_96() -> None:
    prefix = bytes.fromhex("20010db80000000001") + bytes(3)  # bits 64-71 set
    parsed = parse_pref64_option(option(prefix, 1, 10))
    assert parsed is not None and str(parsed.prefix) == "2001:db8::/64"


def test_other_messages_families_and_options_are_skipped() -> None:
    rdnss = bytes([25, 3]) + bytes(6) + IPv6Address("2001:db8::53").packed
    pref = option(bytes.fromhex("0064ff9b") + bytes(8), 0, 10)
    assert pref64_announcements(nduseropt(rdnss)) == []
    assert pref64_announcements(nduseropt(pref, icmp_type=135)) == []  # not an RA
    assert pref64_announcements(nduseropt(pref, family=2)) == []
    assert pref64_announcements(nduseropt(pref, msg_type=3)) == []  # NLMSG_DONE
    both = pref64_announcements(nduseropt(rdnss + pref, router=None))
    assert both == [Announcement(3, None, Pref64(Nat64Prefix.parse("64:ff9b::/96"), 80))]


def test_two_messages_in_one_datagram() -> None:
    first = nduseropt(option(bytes.fromhex("0064ff9b") + bytes(8), 0, 10), ifindex=2)
    second = nduseropt(option(bytes.fromhex("20010db8") + bytes(8), 5, 20), ifindex=4)
    assert [a.ifindex for a in pref64_announcements(first + second)] == [2, 4]


@pytest.mark.parametrize(
    ("data", "layer"),
    [
        (KERNEL_DATAGRAM[:10], "netlink"),
        (struct.pack("=IHHII", 8, 68, 0, 0, 0), "netlink"),  # length below the header
        (struct.pack("=IHHII", 20, 68, 0, 0, 0) + bytes(4), "nduseroptmsg"),
        (nduseropt(bytes([38, 0]) + bytes(14)), "ND option"),  # RFC 4861 §4.6 length 0
        (nduseropt(bytes([38, 3]) + bytes(14)), "ND option"),  # 24 bytes in 16
        (nduseropt(bytes([38, 2]) + bytes(14), opts_len=40, router=None), "nduseroptmsg"),
    ],
)
def test_malformed_messages_name_the_layer(data: bytes, layer: str) -> None:
    with pytest.raises(PacketError) as caught:
        pref64_announcements(data)
    assert caught.value.layer == layer


def test_every_truncation_of_the_kernel_datagram_parses_or_raises_packet_error() -> None:
    for end in range(len(KERNEL_DATAGRAM)):
        try:
            pref64_announcements(KERNEL_DATAGRAM[:end])
        except PacketError:
            continue


def test_scapy_built_options_parse_to_what_scapy_was_told() -> None:
    scapy = pytest.importorskip("scapy.layers.inet6", reason="scapy builds the reference RA")
    for plc, length in enumerate(PLC_LENGTHS):
        built = bytes(scapy.ICMPv6NDOptPREF64(prefix="2001:db8:64::", plc=plc, scaledlifetime=9))
        parsed = parse_pref64_option(built)
        assert parsed is not None and parsed.lifetime == 72
        assert parsed.prefix.network == IPv6Network(("2001:db8:64::", length), strict=False)


@given(
    plc=st.integers(0, 5),
    scaled=st.integers(0, 8191),
    raw=st.binary(min_size=12, max_size=12),
)
def test_rfc8781_4_any_defined_option_round_trips(plc: int, scaled: int, raw: bytes) -> None:
    length = PLC_LENGTHS[plc]
    parsed = parse_pref64_option(option(raw, plc, scaled))
    network = IPv6Network((raw + bytes(4), length), strict=False)
    assert parsed == Pref64(Nat64Prefix(network), scaled * 8)


@given(st.binary(max_size=200))
def test_fuzz_only_packet_error(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        pref64_announcements(data)


@given(st.binary(max_size=64))
def test_fuzz_inside_a_valid_message_only_packet_error(options: bytes) -> None:
    try:
        found = pref64_announcements(nduseropt(options))
    except PacketError:
        return
    assert all(a.pref64.lifetime % 8 == 0 for a in found)


# --- systemd-networkd --------------------------------------------------------------------

# The shape networkd (systemd 253 and later) prints: NDisc.PREF64 per interface, the prefix
# as 16 octets, LifetimeUSec the end of validity in CLOCK_BOOTTIME microseconds.
NETWORKD_STATUS: dict[str, Any] = {
    "Interfaces": [
        {"Name": "lo", "Index": 1},
        {
            "Name": "eth1",
            "NDisc": {
                "PREF64": [
                    {
                        "Prefix": [0, 0x64, 0xFF, 0x9B] + [0] * 12,
                        "PrefixLength": 96,
                        "LifetimeUSec": 1_600_000_000,
                        "ConfigProvider": [0xFE, 0x80] + [0] * 13 + [1],
                    }
                ]
            },
        },
    ]
}


def test_networkd_status_lifetime_left_from_boottime() -> None:
    found = networkd_pref64(NETWORKD_STATUS, now_boottime=1000.0)
    assert found == [("eth1", Pref64(Nat64Prefix.parse("64:ff9b::/96"), 600))]
    one_link = NETWORKD_STATUS["Interfaces"][1]
    assert networkd_pref64(one_link, now_boottime=2000.0) == [
        ("eth1", Pref64(Nat64Prefix.parse("64:ff9b::/96"), 0))
    ]


def test_networkd_entries_that_are_not_prefixes_are_skipped() -> None:
    bad = [
        {"Prefix": [0] * 15, "PrefixLength": 96},
        {"Prefix": [0] * 16, "PrefixLength": 33},
        {"Prefix": [256] + [0] * 15, "PrefixLength": 96},
        "text",
    ]
    status = {"Interfaces": [{"Name": "eth0", "NDisc": {"PREF64": bad}}]}
    assert networkd_pref64(status, now_boottime=0.0) == []
    no_end = {"Name": "eth0", "NDisc": {"PREF64": [{"Prefix": [0] * 16, "PrefixLength": 96}]}}
    assert networkd_pref64(no_end, 0.0)[0][1].lifetime == MAX_LIFETIME


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["Interfaces", "Name", "NDisc", "PREF64", "Prefix",
                                        "PrefixLength", "LifetimeUSec", "x"]), inner),
    max_leaves=30,
)  # fmt: skip


@given(_json)
def test_fuzz_networkd_json_never_raises(status: Any) -> None:
    for name, pref64 in networkd_pref64(status, now_boottime=0.0):
        assert isinstance(name, str) and 0 <= pref64.lifetime <= MAX_LIFETIME


# --- the table -----------------------------------------------------------------------------

A = Nat64Prefix.parse("2001:db8:a::/96")
B = Nat64Prefix.parse("2001:db8:b::/96")
R1 = IPv6Address("fe80::1")


def test_table_the_last_heard_wins_and_lifetime_zero_withdraws() -> None:
    table = Pref64Table()
    table.hear("eth0", R1, Pref64(A, 600), now=0.0)
    table.hear("eth0", R1, Pref64(B, 300), now=10.0)
    best = table.best(11.0)
    assert best is not None and best.prefix == B and best.expires == 310.0
    assert table.next_expiry() == 310.0
    table.hear("eth0", R1, Pref64(B, 0), now=12.0)
    best = table.best(12.0)
    assert best is not None and best.prefix == A
    assert table.best(600.0) is None and len(table) == 0


def test_table_an_ra_repeating_a_prefix_refreshes_it() -> None:
    table = Pref64Table()
    table.hear("eth0", R1, Pref64(A, 100), now=0.0)
    table.hear("eth0", R1, Pref64(A, 100), now=90.0)
    assert table.best(150.0) is not None and len(table) == 1
