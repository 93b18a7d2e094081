"""RFC 6052 IPv4-embedded IPv6 addresses: the address arithmetic of NAT64.

A Nat64Prefix is one of the six lengths of RFC 6052 §2.2 (/32 /40 /48 /56 /64 /96); bits
64–71 (the "u" octet) are always zero, and so are the suffix bits after the embedded
IPv4 address. embed() and extract() are exact inverses for every length.

embed() maps every IPv4 address under every prefix, as the DNS64 servers BIND and Unbound
do: RFC 6052 §3.1 asks the translator, not the address arithmetic, to refuse non-global
IPv4 under the well-known prefix 64:ff9b::/96, and translators differ in what they refuse.
is_global_ipv4() (the RFC 6890 registry plus the RFC 5735 §3 ranges that §3.1 names, since
`ipaddress.is_global` matches neither) explains such a refusal; strict_nat64_refuses() is
the set a strict translator (tayga >= 0.9.4, `wkpf-strict yes`) refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from proxy64.defaults import LOCAL_USE_PREFIX, WELL_KNOWN_PREFIX
from proxy64.errors import AddressMappingError

PREFIX_LENGTHS = (32, 40, 48, 56, 64, 96)  # RFC 6052 §2.2
_U_OCTET = 8  # RFC 6052 §2.2: bits 64 to 71 of the address

# RFC 6890 §2.2.2 entries whose "Global" is False, plus RFC 5735 §3 ranges that RFC 6052
# §3.1 names explicitly (multicast, 6to4 relay anycast). Exceptions below are global.
NON_GLOBAL_IPV4 = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # RFC 1122 "this network"
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 shared address space
        "127.0.0.0/8",  # RFC 1122 loopback
        "169.254.0.0/16",  # RFC 3927 link local
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # RFC 6890 IETF protocol assignments
        "192.0.2.0/24",  # RFC 5737 TEST-NET-1
        "192.88.99.0/24",  # RFC 3068 6to4 relay anycast (RFC 5735 §3, deprecated RFC 7526)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # RFC 2544 benchmarking
        "198.51.100.0/24",  # RFC 5737 TEST-NET-2
        "203.0.113.0/24",  # RFC 5737 TEST-NET-3
        "224.0.0.0/4",  # RFC 5771 multicast (RFC 5735 §3)
        "240.0.0.0/4",  # RFC 1112 reserved (includes 255.255.255.255)
    )
)
GLOBAL_EXCEPTIONS = (
    IPv4Network("192.0.0.9/32"),  # RFC 7723 Port Control Protocol anycast: Global True
    IPv4Network("192.0.0.10/32"),  # RFC 8155 TURN anycast: Global True
)


# What a strict translator refuses under the well-known prefix (RFC 6052 §3.1 as tayga
# >= 0.9.4 applies it with `wkpf-strict yes`, its default): RFC 1918, RFC 6598, the three
# TEST-NETs and the benchmarking range. tayga 0.9.2 refuses the same minus 100.64.0.0/10.
STRICT_NAT64_REFUSED = tuple(
    IPv4Network(n)
    for n in (
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 shared address space
        "172.16.0.0/12",  # RFC 1918
        "192.0.2.0/24",  # RFC 5737 TEST-NET-1
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # RFC 2544 benchmarking
        "198.51.100.0/24",  # RFC 5737 TEST-NET-2
        "203.0.113.0/24",  # RFC 5737 TEST-NET-3
    )
)


def is_global_ipv4(address: IPv4Address) -> bool:
    """True where the RFC 6890 registry (and RFC 5735 §3) call the address global."""
    if any(address in net for net in GLOBAL_EXCEPTIONS):
        return True
    return not any(address in net for net in NON_GLOBAL_IPV4)


def strict_nat64_refuses(ipv4: IPv4Address) -> bool:
    """True when a strict translator refuses ipv4 under 64:ff9b::/96 (RFC 6052 §3.1 as
    tayga >= 0.9.4 applies it); a network-specific prefix carries it everywhere."""
    return any(ipv4 in net for net in STRICT_NAT64_REFUSED)


@dataclass(frozen=True, slots=True)
class Nat64Prefix:
    """A validated RFC 6052 prefix. Build one with Nat64Prefix.parse() or from_network()."""

    network: IPv6Network

    def __post_init__(self) -> None:
        net = self.network
        if net.prefixlen not in PREFIX_LENGTHS:
            raise AddressMappingError(
                f"NAT64 prefix {net} has length /{net.prefixlen}; RFC 6052 §2.2 allows only "
                "/32, /40, /48, /56, /64 or /96"
            )
        packed = net.network_address.packed
        if net.prefixlen < 96 and packed[_U_OCTET] != 0:
            raise AddressMappingError(
                f"NAT64 prefix {net} sets bits 64-71 (the u octet), which RFC 6052 §2.2 "
                "requires to be zero"
            )

    @classmethod
    def parse(cls, text: str) -> Nat64Prefix:
        """Parse "64:ff9b::/96"; host bits set is an error, not silently cleared."""
        try:
            network = IPv6Network(text.strip(), strict=False)
            given = IPv6Address(text.strip().split("/")[0])
        except ValueError as exc:
            raise AddressMappingError(
                f"{text!r} is not an IPv6 prefix ({exc}); "
                "expected e.g. 64:ff9b::/96 or 2001:db8:100::/40"
            ) from None
        if network.prefixlen in PREFIX_LENGTHS and network.prefixlen < 96 and given.packed[8]:
            raise AddressMappingError(
                f"NAT64 prefix {text.strip()} sets bits 64-71 (the u octet), which RFC 6052 "
                "§2.2 requires to be zero"
            )
        if given != network.network_address:
            raise AddressMappingError(
                f"{text.strip()} has bits set after the prefix length; expected the prefix "
                f"without host bits, such as {network}"
            )
        return cls(network)

    @classmethod
    def from_network(cls, network: IPv6Network) -> Nat64Prefix:
        return cls(network)

    @property
    def length(self) -> int:
        return self.network.prefixlen

    @property
    def is_well_known(self) -> bool:
        return self.network == WELL_KNOWN_PREFIX

    @property
    def is_local_use(self) -> bool:
        return self.network.subnet_of(LOCAL_USE_PREFIX)

    def __str__(self) -> str:
        return str(self.network)

    def contains(self, address: IPv6Address) -> bool:
        """True when address lies in the prefix and its u octet is zero."""
        if address not in self.network:
            return False
        return self.length == 96 or address.packed[_U_OCTET] == 0

    def embed(self, ipv4: IPv4Address) -> IPv6Address:
        """RFC 6052 §2.2: place the 32 IPv4 bits after the prefix, skipping the u octet.

        Every IPv4 address is embedded, under the well-known prefix too: whether a
        non-global one is translated is the translator's decision (RFC 6052 §3.1).
        """
        out = bytearray(self.network.network_address.packed)
        for index, octet in zip(_ipv4_positions(self.length), ipv4.packed, strict=True):
            out[index] = octet
        return IPv6Address(bytes(out))

    def extract(self, address: IPv6Address) -> IPv4Address:
        """RFC 6052 §2.3: the inverse of embed(); the address must lie in the prefix."""
        if not self.contains(address):
            raise AddressMappingError(f"{address} is not inside the NAT64 prefix {self.network}")
        packed = address.packed
        return IPv4Address(bytes(packed[i] for i in _ipv4_positions(self.length)))


def _ipv4_positions(length: int) -> tuple[int, ...]:
    """Byte offsets of the four IPv4 octets for a prefix length (RFC 6052 §2.2 figure 1)."""
    return _POSITIONS[length]


def _positions(length: int) -> tuple[int, ...]:
    start = length // 8
    indexes = [i for i in range(start, 16) if i != _U_OCTET or length == 96]
    return tuple(indexes[:4])


_POSITIONS = {length: _positions(length) for length in PREFIX_LENGTHS}
