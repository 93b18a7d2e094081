"""PREF64 (RFC 8781): the NAT64 prefix a router announces in its Router Advertisements.

Pure parsing, no socket and no clock: the bytes Linux hands to userspace over rtnetlink
(RTM_NEWNDUSEROPT: a netlink header, a struct nduseroptmsg, the ND options of one RA,
then the router's address as attribute NDUSEROPT_SRCADDR), the PREF64 option inside
(RFC 8781 §4), and the PREF64 list systemd-networkd prints with `networkctl --json`.
Pref64Table keeps what was heard per (interface, router, prefix) with its expiry; the
caller gives it the time.

Invariants: a malformed message raises PacketError naming the layer and the offset; an
option the RFC says to ignore (PLC 6 or 7, Length other than 2) is skipped, not an error; every
prefix returned is a valid RFC 6052 prefix (Nat64Prefix).
Netlink headers are in host byte order (netlink(7)); ND options in network order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from proxy64.errors import AddressMappingError, PacketError
from proxy64.proto.rfc6052 import Nat64Prefix

ND_OPT_PREF64 = 38  # RFC 8781 §4 (IANA IPv6 ND option type)
ICMPV6_ROUTER_ADVERTISEMENT = 134  # RFC 4861 §4.2
RTM_NEWNDUSEROPT = 68  # linux/rtnetlink.h
RTNLGRP_ND_USEROPT = 20  # linux/rtnetlink.h: the multicast group carrying RTM_NEWNDUSEROPT
NDUSEROPT_SRCADDR = 1  # linux/neighbour.h: the attribute holding the router's address
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3  # linux/netlink.h
AF_INET6 = 10  # linux/socket.h (socket.AF_INET6 on Linux; the proto package has no socket)

# RFC 8781 §4: Prefix Length Code → prefix length; 6 and 7 are not defined.
PLC_LENGTHS = (96, 64, 56, 48, 40, 32)
LIFETIME_UNIT = 8  # RFC 8781 §4: the Scaled Lifetime counts units of 8 seconds
MAX_LIFETIME = 8191 * LIFETIME_UNIT  # 13 bits of units: 65528 s

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host byte order)
_NDUSEROPTMSG = struct.Struct("=BBHiBBHI")  # family, pad, opts_len, ifindex, type, code
_RTATTR = struct.Struct("=HH")  # rta_len, rta_type
_NL_ALIGN = 4


@dataclass(frozen=True, slots=True)
class Pref64:
    """One PREF64 option: the prefix and how many seconds it may be used (0: withdrawn)."""

    prefix: Nat64Prefix
    lifetime: int


@dataclass(frozen=True, slots=True)
class Announcement:
    """A PREF64 option as the kernel passed it on: which interface, which router."""

    ifindex: int
    router: IPv6Address | None
    pref64: Pref64


def _align(length: int) -> int:
    return (length + _NL_ALIGN - 1) & ~(_NL_ALIGN - 1)


def parse_pref64_option(option: bytes, offset: int = 0) -> Pref64 | None:
    """RFC 8781 §4; `option` starts at its Type octet. None: the RFC says to ignore it."""
    if len(option) < 2:
        raise PacketError("PREF64", "option shorter than its type and length", offset)
    kind, units = option[0], option[1]
    if kind != ND_OPT_PREF64:
        raise PacketError("PREF64", f"option type {kind}, expected {ND_OPT_PREF64}", offset)
    if units == 0:  # RFC 4861 §4.6: an option of length 0 makes the message invalid
        raise PacketError("PREF64", "option length 0", offset + 1)
    if len(option) < units * 8:
        raise PacketError("PREF64", f"option of {units * 8} bytes cut at {len(option)}", offset)
    if units != 2:  # RFC 8781 §4: a receiver ignores a PREF64 option whose Length is not 2
        return None
    (word,) = struct.unpack_from("!H", option, 2)
    plc = word & 0x7
    if plc >= len(PLC_LENGTHS):  # RFC 8781 §4: an undefined PLC makes the option ignored
        return None
    length = PLC_LENGTHS[plc]
    # RFC 8781 §4: bits beyond the prefix length are ignored, bits 96-127 are not sent;
    # so the u octet (bits 64-71, RFC 6052 §2.2) is zero for every length below 96.
    network = IPv6Network((bytes(option[4:16]) + bytes(4), length), strict=False)
    return Pref64(Nat64Prefix(network), (word >> 3) * LIFETIME_UNIT)


def iter_nd_options(data: bytes, offset: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """(type, offset, option bytes) of each ND option in data (RFC 4861 §4.6)."""
    at = 0
    while at < len(data):
        if len(data) - at < 2:
            raise PacketError("ND option", "a trailing byte after the last option", offset + at)
        units = data[at + 1]
        if units == 0:
            raise PacketError("ND option", "option length 0 (RFC 4861 §4.6)", offset + at + 1)
        end = at + units * 8
        if end > len(data):
            raise PacketError("ND option", "option longer than the message", offset + at)
        yield data[at], offset + at, data[at:end]
        at = end


def parse_nduseropt(payload: bytes, offset: int = 0) -> tuple[int, int, int, bytes, bytes]:
    """struct nduseroptmsg: (family, ifindex, icmp_type, options, attributes)."""
    if len(payload) < _NDUSEROPTMSG.size:
        raise PacketError("nduseroptmsg", "shorter than its header", offset)
    family, _, opts_len, ifindex, icmp_type, _, _, _ = _NDUSEROPTMSG.unpack_from(payload)
    start = _NDUSEROPTMSG.size
    if start + opts_len > len(payload):
        raise PacketError("nduseroptmsg", f"{opts_len} option bytes cut short", offset + 2)
    end = start + opts_len
    return family, ifindex, icmp_type, payload[start:end], payload[_align(end) :]


def router_address(attributes: bytes) -> IPv6Address | None:
    """NDUSEROPT_SRCADDR, the RA's source; None when absent or not 16 bytes."""
    at = 0
    while at + _RTATTR.size <= len(attributes):
        length, kind = _RTATTR.unpack_from(attributes, at)
        if length < _RTATTR.size or at + length > len(attributes):
            return None
        if kind == NDUSEROPT_SRCADDR and length == _RTATTR.size + 16:
            return IPv6Address(bytes(attributes[at + _RTATTR.size : at + length]))
        at += _align(length)
    return None


def iter_netlink(datagram: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, offset, payload) of each netlink message in one datagram (netlink(7))."""
    at = 0
    while at < len(datagram):
        if len(datagram) - at < _NLMSGHDR.size:
            raise PacketError("netlink", "a message shorter than its header", at)
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(datagram, at)
        if length < _NLMSGHDR.size or at + length > len(datagram):
            raise PacketError("netlink", f"message length {length} does not fit", at)
        yield kind, at + _NLMSGHDR.size, datagram[at + _NLMSGHDR.size : at + length]
        at += _align(length)


def pref64_announcements(datagram: bytes) -> list[Announcement]:
    """Every PREF64 option of Router Advertisements in one rtnetlink datagram, in order.

    Other messages (NLMSG_NOOP/DONE/ERROR), other families and other ND options (RDNSS,
    DNSSL) are skipped; PREF64 options the RFC says to ignore are left out.
    """
    found: list[Announcement] = []
    for kind, offset, payload in iter_netlink(datagram):
        if kind != RTM_NEWNDUSEROPT:
            continue
        family, ifindex, icmp_type, options, attributes = parse_nduseropt(payload, offset)
        if family != AF_INET6 or icmp_type != ICMPV6_ROUTER_ADVERTISEMENT:
            continue
        router = router_address(attributes)
        options_at = offset + _NDUSEROPTMSG.size
        for option_type, at, option in iter_nd_options(options, options_at):
            if option_type != ND_OPT_PREF64:
                continue
            pref64 = parse_pref64_option(option, at)
            if pref64 is not None:
                found.append(Announcement(ifindex, router, pref64))
    return found


# --- systemd-networkd: `networkctl --json=short status` ---------------------------------


def networkd_pref64(status: Any, now_boottime: float) -> list[tuple[str, Pref64]]:
    """(interface, PREF64) from networkctl's JSON: the whole status (an "Interfaces"
    list) or one link. networkd gives each prefix's end as LifetimeUSec, microseconds
    of CLOCK_BOOTTIME; now_boottime (seconds) turns it into the lifetime left.
    Anything not shaped like that is skipped: the JSON is another program's output.
    """
    links: list[Any]
    if isinstance(status, Mapping) and isinstance(status.get("Interfaces"), list):
        links = status["Interfaces"]
    elif isinstance(status, list):
        links = status
    else:
        links = [status]
    found: list[tuple[str, Pref64]] = []
    for link in links:
        if not isinstance(link, Mapping):
            continue
        name = link.get("Name")
        ndisc = link.get("NDisc")
        entries = ndisc.get("PREF64") if isinstance(ndisc, Mapping) else None
        if not isinstance(name, str) or not isinstance(entries, list):
            continue
        for entry in entries:
            pref64 = _networkd_entry(entry, now_boottime)
            if pref64 is not None:
                found.append((name, pref64))
    return found


def _networkd_entry(entry: Any, now_boottime: float) -> Pref64 | None:
    if not isinstance(entry, Mapping):
        return None
    raw, length, until = entry.get("Prefix"), entry.get("PrefixLength"), entry.get("LifetimeUSec")
    if not isinstance(raw, list) or len(raw) != 16 or length not in PLC_LENGTHS:
        return None
    if not all(isinstance(octet, int) and 0 <= octet <= 255 for octet in raw):
        return None
    try:
        prefix = Nat64Prefix(IPv6Network((bytes(raw), length), strict=False))
    except AddressMappingError:
        return None
    if isinstance(until, int) and not isinstance(until, bool) and until >= 0:
        lifetime = max(0, min(MAX_LIFETIME, int(until / 1e6 - now_boottime)))
    else:  # no end given: the longest a PREF64 can last
        lifetime = MAX_LIFETIME
    return Pref64(prefix, lifetime)


# --- what was heard, with expiry ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    """A live PREF64: where it came from and until when (the caller's clock)."""

    interface: str
    router: IPv6Address | None
    prefix: Nat64Prefix
    expires: float
    heard_at: float


class Pref64Table:
    """PREF64 prefixes heard, per (interface, router, prefix), until their lifetime ends.

    RFC 8781 §4: a lifetime of 0 withdraws the prefix. When several are live the one
    heard last is used: a router that renumbers announces the new prefix and lets (or
    makes) the old one expire.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, IPv6Address | None, Nat64Prefix], Heard] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def hear(self, interface: str, router: IPv6Address | None, pref64: Pref64, now: float) -> None:
        key = (interface, router, pref64.prefix)
        if pref64.lifetime == 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = Heard(interface, router, pref64.prefix, now + pref64.lifetime, now)

    def expire(self, now: float) -> None:
        for key in [k for k, heard in self._entries.items() if heard.expires <= now]:
            del self._entries[key]

    def best(self, now: float) -> Heard | None:
        self.expire(now)
        if not self._entries:
            return None
        return max(self._entries.values(), key=lambda heard: heard.heard_at)

    def next_expiry(self) -> float | None:
        return min((heard.expires for heard in self._entries.values()), default=None)
