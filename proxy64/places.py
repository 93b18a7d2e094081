"""This host and link-local, as addresses and names: what the destination policy and the
access rules both ask of a destination. Pure: addresses and names in, booleans out.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

LOOPBACK4 = IPv4Network("127.0.0.0/8")  # RFC 1122 §3.2.1.3
LOOPBACK6 = IPv6Address("::1")  # RFC 4291 §2.5.3
LINK_LOCAL4 = IPv4Network("169.254.0.0/16")  # RFC 3927; cloud metadata 169.254.169.254
LINK_LOCAL6 = IPv6Network("fe80::/10")  # RFC 4291 §2.5.6
CLOUD_METADATA6 = IPv6Address("fd00:ec2::254")  # AWS's IPv6 instance metadata service
LOCALHOST = "localhost"  # RFC 6761 §6.3


def is_localhost_name(name: str) -> bool:
    """RFC 6761 §6.3: `localhost` and every name under it are this host's loopback."""
    label = name.rstrip(".").lower()
    return label == LOCALHOST or label.endswith("." + LOCALHOST)


def is_loopback(address: IPAddress) -> bool:
    if isinstance(address, IPv4Address):
        return address in LOOPBACK4
    mapped = address.ipv4_mapped
    return address == LOOPBACK6 or (mapped is not None and mapped in LOOPBACK4)


def is_link_local(address: IPAddress) -> bool:
    if isinstance(address, IPv4Address):
        return address in LINK_LOCAL4
    mapped = address.ipv4_mapped
    if mapped is not None:
        return mapped in LINK_LOCAL4
    return address in LINK_LOCAL6 or address == CLOUD_METADATA6
