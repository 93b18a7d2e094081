"""Packets as the app in a TUN sandbox writes them, for the flow and wire tests: the app's
and a remote's addresses (the sandbox's own, proxy64/defaults.py TUN_*, and documentation
ranges), and a TCP segment from the app (proxy64.flow.build builds the other direction).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from proxy64.flow import build
from proxy64.flow.segment import Segment
from proxy64.flow.wire import TCP, FlowKey

APP6 = IPv6Address("fd64::2")
GW6 = IPv6Address("fd64::1")
REMOTE6 = IPv6Address("2001:db8:64::7f00:1")
APP4 = IPv4Address("10.64.0.2")
REMOTE4 = IPv4Address("192.0.2.7")

Address = IPv4Address | IPv6Address


def app_tcp(
    seg: Segment,
    src: Address = APP6,
    dst: Address = REMOTE6,
    sport: int = 40000,
    dport: int = 80,
) -> bytes:
    """A TCP packet from the app: the flow key as proxy64 sees it, reversed."""
    return build.tcp_packet(FlowKey(TCP, (dst, dport), (src, sport)), seg)
