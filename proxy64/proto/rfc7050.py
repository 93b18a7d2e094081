"""RFC 7050 §3: derive NAT64 prefixes from the AAAA records of ipv4only.arpa.

A DNS64 synthesizes ipv4only.arpa's A records 192.0.0.170 and 192.0.0.171 (the
well-known IPv4 addresses, WKAs) into AAAA records; where a WKA sits inside such an
address tells the prefix and its length. Every RFC 6052 length is tried (§2.2 positions,
the u octet skipped). An address where a WKA appears at more than one position is
ambiguous: the other WKA decides (RFC 7050 §3 "checking both WKAs"); if it cannot,
the address is ignored. Several distinct prefixes are all returned, in answer order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from proxy64.defaults import IPV4ONLY_ADDRESSES
from proxy64.errors import AddressMappingError
from proxy64.proto.rfc6052 import PREFIX_LENGTHS, Nat64Prefix

WKAS = tuple(IPv4Address(a) for a in IPV4ONLY_ADDRESSES)  # RFC 7050 §2.2


def _prefix_at(address: IPv6Address, length: int) -> Nat64Prefix | None:
    try:
        return Nat64Prefix(IPv6Network((address, length), strict=False))
    except AddressMappingError:
        return None  # u octet set: not a valid RFC 6052 prefix at this length


def wka_positions(address: IPv6Address) -> list[tuple[Nat64Prefix, IPv4Address]]:
    """Every (prefix, WKA) such that address is the WKA embedded in that prefix."""
    found = []
    for length in PREFIX_LENGTHS:
        prefix = _prefix_at(address, length)
        if prefix is None or not prefix.contains(address):
            continue
        # RFC 7050 §3 looks for the WKA bytes only; the suffix bits are not checked.
        embedded = prefix.extract(address)
        if embedded in WKAS:
            found.append((prefix, embedded))
    return found


def derive_prefixes(addresses: Iterable[IPv6Address]) -> list[Nat64Prefix]:
    """RFC 7050 §3: the NAT64 prefixes that the AAAA records of ipv4only.arpa reveal."""
    answer = list(dict.fromkeys(addresses))
    present = set(answer)
    prefixes: list[Nat64Prefix] = []
    for address in answer:
        chosen = _unambiguous(wka_positions(address), present)
        if chosen is not None and chosen not in prefixes:
            prefixes.append(chosen)
    return prefixes


def _unambiguous(
    candidates: Sequence[tuple[Nat64Prefix, IPv4Address]], present: set[IPv6Address]
) -> Nat64Prefix | None:
    if len(candidates) == 1:
        return candidates[0][0]
    # A WKA at several positions: keep the positions where the other WKA is also in the
    # answer under the same prefix; one left is the answer, otherwise ignore the address.
    confirmed = [
        prefix
        for prefix, wka in candidates
        if any(prefix.embed(other) in present for other in WKAS if other != wka)
    ]
    if len(confirmed) == 1:
        return confirmed[0]
    return None
