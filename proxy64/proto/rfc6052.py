"""RFC 6052 IPv4-embedded IPv6 addresses: the address arithmetic of NAT64.

A Nat64Prefix is one of the six lengths of RFC 6052 §2.2 (/32 /40 /48 /56 /64 /96); bits
64–71 (the "u" octet) are always zero, and so are the suffix bits after the embedded
IPv4 address. embed() and extract() are exact inverses for every length.

The well-known prefix 64:ff9b::/96 must not carry non-global IPv4 (RFC 6052 §3.1); the
set of non-global ranges is taken from the RFC 6890 special-purpose registry and the
RFC 5735 §3 list that §3.1 names, because `ipaddress.is_global` does not match either.
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


def is_global_ipv4(address: IPv4Address) -> bool:
    """True where the RFC 6890 registry (and RFC 5735 §3) call the address global."""
    if any(address in net for net in GLOBAL_EXCEPTIONS):
        return True
    return not any(address in net for net in NON_GLOBAL_IPV4)


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

    def embed(self, ipv4: IPv4Address, *, check_global: bool = True) -> IPv6Address:
        """RFC 6052 §2.2: place the 32 IPv4 bits after the prefix, skipping the u octet.

        With the well-known prefix a non-global IPv4 address is refused (§3.1), unless
        check_global is False (a DNS64 with an explicit "mapped" policy may decide so).
        """
        if check_global and self.is_well_known and not is_global_ipv4(ipv4):
            raise AddressMappingError(
                f"{self.network} cannot carry {ipv4}: it is not a global IPv4 address "
                "(RFC 6052 §3.1); use a network-specific prefix or 64:ff9b:1::/48 "
                "(RFC 8215) with --nat64-prefix"
            )
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
