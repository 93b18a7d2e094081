"""scapy as the independent oracle: hypothesis strategies that build random packets with
scapy, and helpers to let scapy recompute checksums of bytes we produced."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
)
from scapy.packet import Packet, Raw  # noqa: E402

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
payloads = st.one_of(st.binary(max_size=64), st.binary(min_size=1000, max_size=1600), st.just(b""))


@dataclass
class Built:
    """A scapy-built packet with what the strategy chose (the expected values)."""

    packet: Packet
    family: int
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return bytes(self.packet)


def v4_addresses() -> st.SearchStrategy[str]:
    return st.ip_addresses(v=4).map(str)


def v6_addresses() -> st.SearchStrategy[str]:
    return st.ip_addresses(v=6).map(str)


TCP_OPTION_KINDS = ("MSS", "WScale", "SAckOK", "Timestamp", "SAck", "NOP", "Unknown")

# scapy names a TCP option it knows and takes the kind number for one it does not
TcpOption = tuple[str | int, Any]


@st.composite
def tcp_options(draw: st.DrawFn) -> list[TcpOption]:
    kinds = draw(st.lists(st.sampled_from(TCP_OPTION_KINDS), unique=True, max_size=5))
    out: list[TcpOption] = []
    for kind in kinds:
        if kind == "MSS":
            out.append(("MSS", draw(u16)))
        elif kind == "WScale":
            out.append(("WScale", draw(st.integers(0, 14))))
        elif kind == "SAckOK":
            out.append(("SAckOK", b""))
        elif kind == "Timestamp":
            out.append(("Timestamp", (draw(u32), draw(u32))))
        elif kind == "SAck":
            n = draw(st.integers(1, 2))
            out.append(("SAck", tuple(draw(u32) for _ in range(2 * n))))
        elif kind == "NOP":
            out.append(("NOP", None))
        else:
            out.append((draw(st.sampled_from([30, 34, 99, 253])), draw(st.binary(max_size=6))))
    return out


def _options_length(options: list[TcpOption]) -> int:
    return len(TCP(options=options).build()) - 20


@st.composite
def transports(draw: st.DrawFn, family: int) -> tuple[Packet, dict[str, Any]]:
    kind = draw(st.sampled_from(["tcp", "udp", "echo", "error", "other"]))
    data = draw(payloads)
    if kind == "tcp":
        options = draw(tcp_options().filter(lambda o: _options_length(o) <= 40))
        fields: dict[str, Any] = {
            "sport": draw(u16),
            "dport": draw(u16),
            "seq": draw(u32),
            "ack": draw(u32),
            "flags": draw(u8),
            "window": draw(u16),
            "urgptr": draw(u16),
        }
        return TCP(options=options, **fields) / Raw(data), {"tcp": fields, "options": options}
    if kind == "udp":
        fields = {"sport": draw(u16), "dport": draw(u16)}
        return UDP(**fields) / Raw(data), {"udp": fields}
    if kind == "echo":
        ident, seq, reply = draw(u16), draw(u16), draw(st.booleans())
        if family == 4:
            layer: Packet = ICMP(type=0 if reply else 8, id=ident, seq=seq)
        else:
            layer = (ICMPv6EchoReply if reply else ICMPv6EchoRequest)(id=ident, seq=seq)
        return layer / Raw(data), {"echo": (ident, seq, reply)}
    if kind == "error":
        which = draw(st.sampled_from(["unreach", "toobig", "time", "param"]))
        value = draw(st.integers(68, 0xFFFF))
        if family == 4:
            layer = {
                "unreach": ICMP(type=3, code=draw(st.integers(0, 15))),
                "toobig": ICMP(type=3, code=4, nexthopmtu=value),
                "time": ICMP(type=11, code=draw(st.integers(0, 1))),
                "param": ICMP(type=12, ptr=value & 0xFF),
            }[which]
        else:
            layer = {
                "unreach": ICMPv6DestUnreach(code=draw(st.integers(0, 6))),
                "toobig": ICMPv6PacketTooBig(mtu=value),
                "time": ICMPv6TimeExceeded(code=draw(st.integers(0, 1))),
                "param": ICMPv6ParamProblem(code=draw(st.integers(0, 2)), ptr=value),
            }[which]
        return layer / Raw(data), {"error": (which, value)}
    proto = draw(st.sampled_from([50, 253, 254]))  # none with a checksum scapy would redo
    return Raw(data), {"other": proto}


@st.composite
def ipv4_packets(draw: st.DrawFn) -> Built:
    upper, expect = draw(transports(4))
    options = draw(st.lists(st.sampled_from([IPOption_NOP, IPOption_Router_Alert]), max_size=3))
    fields: dict[str, Any] = {
        "src": draw(v4_addresses()),
        "dst": draw(v4_addresses()),
        "tos": draw(u8),
        "id": draw(u16),
        "flags": draw(st.sampled_from([0, 2])),
        "ttl": draw(u8),
    }
    header = IP(options=[o() for o in options], **fields)
    if "other" in expect:
        header.proto = expect["other"]
    expect["ip"] = fields
    return Built(header / upper, 4, expect)


EXTENSIONS = ("dst", "rt0", "rt2", "srh", "atomic")


def _extension(draw: st.DrawFn, kind: str) -> Packet:
    if kind == "dst":
        return IPv6ExtHdrDestOpt()
    if kind in ("rt0", "rt2"):
        n = 1 if kind == "rt2" else draw(st.integers(1, 3))
        addresses = [draw(v6_addresses()) for _ in range(n)]
        segleft = draw(st.integers(0, n))
        return IPv6ExtHdrRouting(
            type=0 if kind == "rt0" else 2, addresses=addresses, segleft=segleft
        )
    if kind == "srh":
        n = draw(st.integers(1, 3))
        return IPv6ExtHdrSegmentRouting(
            addresses=[draw(v6_addresses()) for _ in range(n)], segleft=draw(st.integers(0, n - 1))
        )
    return IPv6ExtHdrFragment(offset=0, m=0, id=draw(u32))  # atomic fragment (RFC 6946)


@st.composite
def ipv6_packets(draw: st.DrawFn) -> Built:
    upper, expect = draw(transports(6))
    fields: dict[str, Any] = {
        "src": draw(v6_addresses()),
        "dst": draw(v6_addresses()),
        "tc": draw(u8),
        "fl": draw(st.integers(0, (1 << 20) - 1)),
        "hlim": draw(u8),
    }
    packet: Packet = IPv6(**fields)
    kinds: list[str] = []
    if draw(st.booleans()):
        packet = packet / IPv6ExtHdrHopByHop()
        kinds.append("hbh")
    for kind in draw(st.lists(st.sampled_from(EXTENSIONS), max_size=3)):
        packet = packet / _extension(draw, kind)
        kinds.append(kind)
    if "other" in expect:
        packet.lastlayer().nh = expect["other"]
    expect["ip"] = fields
    expect["extensions"] = kinds
    return Built(packet / upper, 6, expect)


def ip_packets() -> st.SearchStrategy[Built]:
    return st.one_of(ipv4_packets(), ipv6_packets())


def parse_with_scapy(data: bytes) -> Packet:
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


def upper_layer(packet: Packet) -> Packet:
    """The first layer after IP and its extension headers."""
    layer = packet.payload
    while isinstance(
        layer,
        IPv6ExtHdrHopByHop
        | IPv6ExtHdrDestOpt
        | IPv6ExtHdrRouting
        | IPv6ExtHdrSegmentRouting
        | IPv6ExtHdrFragment,
    ):
        layer = layer.payload
    return layer


def scapy_recomputed(data: bytes) -> bytes:
    """data with every checksum (IPv4 header, first upper layer) recomputed by scapy."""
    packet = parse_with_scapy(data)
    if isinstance(packet, IP):
        del packet.chksum
    layer = upper_layer(packet)
    for name in ("chksum", "cksum"):
        if name in layer.fields:
            delattr(layer, name)
    return bytes(packet)


__all__ = [
    "ICMP",
    "IP",
    "TCP",
    "UDP",
    "Built",
    "ICMPv6EchoRequest",
    "IPv6",
    "IPv6ExtHdrFragment",
    "IPv6ExtHdrHopByHop",
    "IPv6ExtHdrRouting",
    "Raw",
    "ip_packets",
    "ipv4_packets",
    "ipv6_packets",
    "parse_with_scapy",
    "scapy_recomputed",
]
