"""Regenerate the known-answer packets of this directory with scapy (the independent
encoder): `.venv/bin/python tests/data/packets/make_packets.py`. One packet per .hex file,
hex on one line. tests/packet/test_known_answers.py holds the expected field values."""

from __future__ import annotations

import logging
from pathlib import Path

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.layers.dns import DNS, DNSQR  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

HERE = Path(__file__).parent
SYN_OPTIONS = [
    ("MSS", 1460),
    ("SAckOK", b""),
    ("Timestamp", (123456, 0)),
    ("NOP", None),
    ("WScale", 7),
]


def _udp6_checksum(src: str, dst: str, sport: int, dport: int, data: bytes) -> int:
    # scapy leaves the UDP checksum at 0 behind an AH header; the pseudo-header (RFC 8200
    # §8.1) does not include extension headers, so the same datagram without AH has it.
    plain = IPv6(bytes(IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(data)))
    return int(plain[UDP].chksum)


PACKETS: dict[str, Packet] = {
    "ipv4_tcp_syn": IP(src="192.0.2.10", dst="198.51.100.20", id=0x1C46, flags="DF", tos=0x10)
    / TCP(sport=51000, dport=443, seq=0x01020304, flags="S", window=64240, options=SYN_OPTIONS),
    "ipv6_tcp_data": IPv6(
        src="2001:db8::10", dst="64:ff9b::c633:6414", tc=0x28, fl=0x12345, hlim=57
    )
    / TCP(
        sport=443,
        dport=51000,
        seq=3000000000,
        ack=0x01020305,
        flags="PA",
        window=501,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (99, 123456))],
    )
    / Raw(b"HTTP/1.1 200 OK\r\n\r\n"),
    "ipv4_udp_dns": IP(src="10.0.0.2", dst="10.0.0.53", id=4242, ttl=63)
    / UDP(sport=33333, dport=53)
    / DNS(id=0xBEEF, rd=1, qd=DNSQR(qname="example.com", qtype="AAAA")),
    "ipv6_udp_extensions": IPv6(src="fd00::1", dst="fd00::2", hlim=1)
    / IPv6ExtHdrHopByHop()
    / IPv6ExtHdrDestOpt()
    / UDP(sport=5000, dport=6000)
    / Raw(b"odd"),
    "ipv6_udp_routing": IPv6(src="2001:db8::1", dst="2001:db8::a")
    / IPv6ExtHdrRouting(addresses=["2001:db8::b", "2001:db8::c"], segleft=2)
    / UDP(sport=7, dport=7)
    / Raw(b"final destination pseudo-header"),
    "ipv6_ah_udp": IPv6(src="2001:db8::1", dst="2001:db8::2")
    / AH(nh=17, payloadlen=4, spi=0x1000, seq=9, icv=bytes(range(12)))
    / UDP(
        sport=500,
        dport=4500,
        chksum=_udp6_checksum("2001:db8::1", "2001:db8::2", 500, 4500, b"ipsec"),
    )
    / Raw(b"ipsec"),
    "ipv4_icmp_echo": IP(src="192.0.2.1", dst="192.0.2.2", ttl=255)
    / ICMP(type=8, id=0x4D2, seq=1)
    / Raw(bytes(range(32))),
    "ipv6_icmpv6_echo": IPv6(src="2001:db8::1", dst="2001:db8::2")
    / ICMPv6EchoRequest(id=0x4D2, seq=2, data=b"abcdefgh"),
    "ipv6_icmpv6_too_big": IPv6(src="2001:db8::fe", dst="2001:db8::1")
    / ICMPv6PacketTooBig(mtu=1280)
    / IPv6(src="2001:db8::1", dst="2001:db8::99", plen=1460, nh=6)
    / Raw(bytes(40)),
    "ipv4_fragment_first": IP(src="192.0.2.1", dst="192.0.2.2", id=77, flags="MF")
    / UDP(sport=1, dport=2, len=3008)
    / Raw(b"\x11" * 64),
    "ipv6_fragment_later": IPv6(src="2001:db8::1", dst="2001:db8::2")
    / IPv6ExtHdrFragment(nh=17, offset=185, m=1, id=0xCAFE)
    / Raw(b"\x22" * 48),
    "ipv4_options_router_alert": IP(
        src="192.0.2.5", dst="224.0.0.22", ttl=1, options=[IPOption_Router_Alert()], proto=2
    )
    / Raw(bytes.fromhex("2200f9020000000104000000e00000fb")),
}


def main() -> None:
    for name, packet in PACKETS.items():
        (HERE / f"{name}.hex").write_text(bytes(packet).hex() + "\n")


if __name__ == "__main__":
    main()
