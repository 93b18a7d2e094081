"""From one IP packet the app wrote to what the flow layer acts on (decode only).

decode() never raises: every packet becomes one Inbound value, and a packet that cannot
be used becomes Malformed or Ignored with a reason that the table counts (STYLE: every
drop reason is counted). Parsing is the packet codec's (proxy64/packet): IPv4/IPv6
headers, extension headers, TCP and its options, checksums. ICMP and UDP fields the
codec exposes as views are read here at fixed offsets (RFC 768, RFC 792, RFC 4443).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from proxy64.errors import PacketError
from proxy64.flow.segment import Segment
from proxy64.packet.checksum import fold, sum_words
from proxy64.packet.ipv4 import IPv4Packet
from proxy64.packet.ipv6 import IPv6Packet
from proxy64.packet.tcp import TcpSegment

IPAddress = IPv4Address | IPv6Address

TCP = 6
UDP = 17
ICMP = 1
ICMPV6 = 58

ICMPV6_PACKET_TOO_BIG = 2  # RFC 4443 §3.2
ICMPV6_ECHO_REQUEST = 128  # RFC 4443 §4.1
ICMP_DEST_UNREACHABLE = 3  # RFC 792
ICMP_FRAG_NEEDED = 4  # RFC 1191 §4: code 4 of type 3 carries the next-hop MTU
ICMP_ECHO_REQUEST = 8

_SEQ_ACK = struct.Struct("!II")
_FAST_MIN = 40 + 20  # an IPv6 header and a bare TCP header
_SYN = 0x02


@dataclass(frozen=True, slots=True, eq=False)
class FlowKey:
    """A transport flow as the app sees it: its own address/port and the one it addressed.

    Looked up several times per packet: equality and hash use one tuple of ints, built
    once (ipaddress objects hash and compare slowly)."""

    protocol: int  # TCP or UDP
    app: tuple[IPAddress, int]
    remote: tuple[IPAddress, int]
    ident: tuple[int, ...] = field(init=False, repr=False)
    hashed: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ident = (self.protocol, self.app[0].version, int(self.app[0]), self.app[1],
                 int(self.remote[0]), self.remote[1])  # fmt: skip
        object.__setattr__(self, "ident", ident)
        object.__setattr__(self, "hashed", hash(ident))

    def __hash__(self) -> int:
        return self.hashed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowKey) and self.ident == other.ident

    @property
    def version(self) -> int:
        return self.app[0].version

    @property
    def app_text(self) -> str:
        return _show(self.app)

    def __str__(self) -> str:
        name = "tcp" if self.protocol == TCP else "udp"
        return f"{name} {_show(self.app)} > {_show(self.remote)}"


def _show(endpoint: tuple[IPAddress, int]) -> str:
    address, port = endpoint
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class TcpIn:
    key: FlowKey
    segment: Segment


@dataclass(frozen=True, slots=True)
class UdpIn:
    key: FlowKey
    payload: bytes


@dataclass(frozen=True, slots=True)
class EchoIn:
    """An echo request (ICMPv6 128 or ICMP 8) to be answered."""

    src: IPAddress
    dst: IPAddress
    ident: int
    sequence: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TooBig:
    """RFC 8201 Packet Too Big / RFC 1191 fragmentation needed, about one of our flows."""

    key: FlowKey
    mtu: int


@dataclass(frozen=True, slots=True)
class Ignored:
    """Valid, but nothing to do (other ICMP types, multicast, our own address family off)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """Refused by the codec or by the checks here; reason names layer and cause."""

    reason: str
    fragment: bool = False  # an IP fragment: the stack answers it with an ICMP error


Inbound = TcpIn | UdpIn | EchoIn | TooBig | Ignored | Malformed


def decode(data: bytes | bytearray | memoryview, *, verify: bool = True) -> Inbound:
    """verify=False: the kernel vouched for the checksums (partial or already checked)."""
    try:
        return _decode(data, verify)
    except PacketError as exc:
        reason = getattr(exc.reason, "name", str(exc.reason)).lower()
        return Malformed(f"{exc.layer}-{reason}", fragment=reason == "fragment")
    except (IndexError, ValueError) as exc:  # a short quoted packet inside an ICMP error
        return Malformed(f"short-field-{type(exc).__name__.lower()}")


class Decoder:
    """decode() with a fast path for the bulk of TUN traffic, and a memory of flow keys.

    The fast path takes an IPv6 packet whose next header is TCP (no extension headers),
    not a SYN (no options to read), whose checksums the kernel vouched for (verify=False):
    the app's data segments and pure ACKs. It reads the fields at their fixed offsets
    (RFC 8200 §3, RFC 9293 §3.1) and returns exactly what decode() returns for the same
    packet (a test compares them on generated packets); anything else goes to decode().
    Flow keys are remembered by the raw addresses and ports (building two IPv6Address
    objects and a FlowKey per packet cost more than the rest of the decode); the memory
    is cleared when it holds max_keys keys, so it stays bounded."""

    __slots__ = ("_keys", "max_keys")

    def __init__(self, max_keys: int = 8192) -> None:
        self._keys: dict[bytes, FlowKey] = {}
        self.max_keys = max_keys

    def decode(self, data: bytes | bytearray | memoryview, *, verify: bool = True) -> Inbound:
        if type(data) is not memoryview or len(data) < _FAST_MIN:
            return decode(data, verify=verify)
        if data[0] >> 4 != 6 or data[6] != TCP or data.format != "B" or data.ndim != 1:
            return decode(data, verify=verify)
        end = 40 + (data[4] << 8 | data[5])  # RFC 8200 §3 payload length
        header_length = (data[52] >> 4) << 2  # RFC 9293 §3.1 data offset
        flags = data[53]
        raw = data[8:44].tobytes()  # source, destination, ports
        if (
            verify
            or end > len(data)
            or header_length < 20
            or 40 + header_length > end
            or (flags & _SYN)
        ):
            return self._remembered(raw, decode(data, verify=verify))  # the codec's verdict
        key = self._keys.get(raw)
        if key is None:
            if len(self._keys) >= self.max_keys:
                self._keys.clear()
            key = FlowKey(TCP, (IPv6Address(raw[:16]), raw[32] << 8 | raw[33]),
                          (IPv6Address(raw[16:32]), raw[34] << 8 | raw[35]))  # fmt: skip
            self._keys[raw] = key
        view = data[40 + header_length : end]
        payload: bytes | memoryview = view if view.readonly else bytes(view)
        seq, ack = _SEQ_ACK.unpack_from(data, 44)
        segment = Segment(seq, ack, flags & 0x3F, data[54] << 8 | data[55], payload)
        return TcpIn(key, segment)

    def _remembered(self, raw: bytes, inbound: Inbound) -> Inbound:
        """The SYN's key becomes the remembered one: the flow table holds that object, so
        later lookups match by identity (no FlowKey.__eq__ call per packet)."""
        if type(inbound) is not TcpIn:
            return inbound
        known = self._keys.get(raw)
        if known is None:
            if len(self._keys) >= self.max_keys:
                self._keys.clear()
            self._keys[raw] = inbound.key
            return inbound
        return TcpIn(known, inbound.segment) if known == inbound.key else inbound


def _decode(data: bytes | bytearray | memoryview, verify: bool) -> Inbound:
    if not data:
        return Malformed("ip-empty")
    version = data[0] >> 4
    ip: IPv4Packet | IPv6Packet
    if version == 6:
        ip = IPv6Packet.parse(data)
    elif version == 4:
        ip = IPv4Packet.parse(data, verify_checksum=verify)
    else:
        return Malformed("ip-bad_version")
    if ip.is_fragment:
        return Malformed(f"ipv{version}-fragment", fragment=True)
    proto = ip.protocol
    if proto == TCP:
        return _tcp(ip, verify)
    if proto == UDP:
        return _udp(ip, verify)
    if proto in (ICMPV6, ICMP):
        if (proto == ICMPV6) != (version == 6):
            return Malformed(f"ipv{version}-icmp-family-mismatch")
        return _icmp(ip)
    return Malformed(f"ipv{version}-unknown-protocol-{proto}")


def _tcp(ip: IPv4Packet | IPv6Packet, verify: bool) -> Inbound:
    tcp = TcpSegment.parse(ip, verify_checksum=verify)
    flags = int(tcp.flags)
    mss = wscale = None
    if flags & 0x02:  # options matter only on a SYN (RFC 9293 §3.7.1, RFC 7323 §2.2)
        options = tcp.options
        mss, wscale = options.mss, options.window_scale
    view = tcp.payload
    # a read-only view (the packet is bytes) is kept as is: no copy of a 64 KiB payload;
    # a view into a buffer the caller may reuse (bytearray) is copied
    payload: bytes | memoryview = view if view.readonly else bytes(view)
    segment = Segment(tcp.seq, tcp.ack, flags & 0x3F, tcp.window, payload, mss,
                      wscale)  # fmt: skip
    key = FlowKey(TCP, (ip.src, tcp.src_port), (ip.dst, tcp.dst_port))
    return TcpIn(key, segment)


def _udp(ip: IPv4Packet | IPv6Packet, verify: bool) -> Inbound:
    mv = ip.buffer[ip.upper_offset :]
    if len(mv) < 8:
        return Malformed(f"udp-truncated-ipv{ip.version}")
    length = mv[4] << 8 | mv[5]
    if length < 8 or length > len(mv):
        return Malformed("udp-bad_udp_length")
    checksum = mv[6] << 8 | mv[7]
    if checksum == 0:
        if ip.version == 6:
            return Malformed("udp-zero_udp_checksum_v6")  # RFC 8200 §8.1
    elif verify and fold(ip.pseudo_header_sum(length) + sum_words(mv[:length])) != 0xFFFF:
        return Malformed("udp-bad_checksum")
    key = FlowKey(UDP, (ip.src, mv[0] << 8 | mv[1]), (ip.dst, mv[2] << 8 | mv[3]))
    return UdpIn(key, bytes(mv[8:length]))


def _icmp(ip: IPv4Packet | IPv6Packet) -> Inbound:
    mv = ip.buffer[ip.upper_offset :]
    name = "icmpv6" if ip.version == 6 else "icmp"
    if len(mv) < 8:
        return Malformed(f"{name}-truncated")
    initial = ip.pseudo_header_sum(len(mv)) if ip.version == 6 else 0  # RFC 4443 §2.3
    if fold(initial + sum_words(mv)) != 0xFFFF:
        return Malformed(f"{name}-bad_checksum")
    kind, code = mv[0], mv[1]
    if (ip.version == 6 and kind == ICMPV6_ECHO_REQUEST) or (
        ip.version == 4 and kind == ICMP_ECHO_REQUEST
    ):
        return EchoIn(ip.src, ip.dst, mv[4] << 8 | mv[5], mv[6] << 8 | mv[7], bytes(mv[8:]))
    if ip.version == 6 and kind == ICMPV6_PACKET_TOO_BIG:
        mtu = int.from_bytes(mv[4:8], "big")
        return _quoted(mv[8:], mtu, version=6)
    if ip.version == 4 and kind == ICMP_DEST_UNREACHABLE and code == ICMP_FRAG_NEEDED:
        return _quoted(mv[8:], mv[6] << 8 | mv[7], version=4)
    return Ignored(f"{name}-type-{kind}")


def _quoted(inner: memoryview, mtu: int, *, version: int) -> Inbound:
    """The packet quoted in an ICMP error: our own packet to the app, so reverse it."""
    if version == 6:
        if len(inner) < 44 or inner[0] >> 4 != 6:
            return Malformed("icmpv6-quote-truncated")
        proto, src, dst, ports = inner[6], inner[8:24], inner[24:40], inner[40:44]
        a: IPAddress = IPv6Address(bytes(src))
        b: IPAddress = IPv6Address(bytes(dst))
    else:
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return Malformed("icmp-quote-truncated")
        ihl = (inner[0] & 0x0F) * 4
        if len(inner) < ihl + 4:
            return Malformed("icmp-quote-truncated")
        proto, ports = inner[9], inner[ihl : ihl + 4]
        a, b = IPv4Address(bytes(inner[12:16])), IPv4Address(bytes(inner[16:20]))
    if proto not in (TCP, UDP):
        return Ignored("packet-too-big-not-tcp-udp")
    # We sent remote → app; the flow key is from the app's point of view.
    key = FlowKey(proto, (b, ports[2] << 8 | ports[3]), (a, ports[0] << 8 | ports[1]))
    return TooBig(key, mtu)
