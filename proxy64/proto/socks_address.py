"""The SOCKS address codec (RFC 1928 §5): ATYP + address + port, shared by the SOCKS5
request and reply, the §7 UDP header and the SOCKS4a host name.

Invariants: a name is letters, digits, '-', '_' within RFC 1035 §2.3.4 lengths, lower-cased, without
its final dot; a DOMAINNAME that is an address literal ("127.0.0.1", "::1", "[::1]") becomes
the address; an IPv4-mapped IPv6 address becomes its IPv4 address (what the client means,
and the only form NAT64 can reach). Malformed input raises RemoteProtocolError; an unknown
ATYP carries reply 0x08 (§6).
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv6Address, ip_address

from proxy64.destination import Destination, Host
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply

IPAddress = IPv4Address | IPv6Address

MAX_NAME = 253  # RFC 1035 §2.3.4: 255 octets on the wire = 253 characters of text
MAX_LABEL = 63  # RFC 1035 §2.3.4
# RFC 952/1123 host names (LDH), plus "_" which service names (RFC 2782) and real hosts use
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class AddressType(enum.IntEnum):
    """RFC 1928 §5 ATYP values."""

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


def decode_host(raw: bytes, *, where: str) -> Host:
    """A DOMAINNAME field's text: an address literal becomes the address, a name is
    checked (RFC 1035 lengths, LDH and '_') and lower-cased without its final dot."""
    if not raw:
        raise RemoteProtocolError(f"empty domain name in the {where}")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            f"domain name in the {where} has non-ASCII bytes; clients must send IDNA "
            "A-labels (xn--...)"
        ) from None
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "%" not in literal:  # a scoped IPv6 literal (fe80::1%eth0) is not a destination
        try:
            return normalize_address(ip_address(literal))
        except ValueError:
            pass
    name = text[:-1] if text.endswith(".") else text
    bad = next((c for c in name if c not in _NAME_CHARACTERS), None)
    if bad is not None:
        raise RemoteProtocolError(
            f"domain name {text!r} in the {where} contains the byte 0x{ord(bad):02x}; names "
            "are letters, digits, '-', '_' and dots"
        )
    if not name or len(name) > MAX_NAME:
        raise RemoteProtocolError(
            f"domain name in the {where} is {len(name)} characters; a DNS name has 1 to "
            f"{MAX_NAME} (RFC 1035 §2.3.4)"
        )
    labels = name.split(".")
    if any(not label or len(label) > MAX_LABEL for label in labels):
        raise RemoteProtocolError(
            f"domain name {name!r} in the {where} has an empty label or one longer than "
            f"{MAX_LABEL} characters (RFC 1035 §2.3.4)"
        )
    return name.lower()


def normalize_address(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_address(
    buf: bytes | bytearray, offset: int, *, where: str
) -> tuple[Destination, int] | None:
    """ATYP DST.ADDR DST.PORT starting at offset: (destination, end offset), or None when
    the buffer does not hold all of it yet. Unknown ATYP: reply 0x08 (RFC 1928 §6)."""
    if len(buf) <= offset:
        return None
    atyp = buf[offset]
    start = offset + 1
    host: Host
    if atyp == AddressType.IPV4:
        end = start + 4
        if len(buf) < end + 2:
            return None
        host = IPv4Address(bytes(buf[start:end]))
    elif atyp == AddressType.IPV6:
        end = start + 16
        if len(buf) < end + 2:
            return None
        host = normalize_address(IPv6Address(bytes(buf[start:end])))
    elif atyp == AddressType.DOMAIN:
        if len(buf) <= start:
            return None
        end = start + 1 + buf[start]
        if len(buf) < end + 2:
            return None
        host = decode_host(bytes(buf[start + 1 : end]), where=where)
    else:
        raise RemoteProtocolError(
            f"unknown address type ATYP 0x{atyp:02x} in the {where}; RFC 1928 §5 defines "
            "0x01 (IPv4), 0x03 (domain name) and 0x04 (IPv6)",
            socks_reply=SocksReply.ADDRESS_TYPE_NOT_SUPPORTED,
        )
    port = int.from_bytes(buf[end : end + 2], "big")
    return Destination(host, port), end + 2


def encode_address(host: Host, port: int) -> bytes:
    """ATYP ADDR PORT for a reply or a UDP header."""
    if isinstance(host, IPv4Address):
        body = bytes([AddressType.IPV4]) + host.packed
    elif isinstance(host, IPv6Address):
        body = bytes([AddressType.IPV6]) + host.packed
    else:
        name = host.encode("ascii")
        if not 0 < len(name) <= 255:
            raise LocalProtocolError(f"cannot encode a {len(name)}-byte name in SOCKS5")
        body = bytes([AddressType.DOMAIN, len(name)]) + name
    return body + port.to_bytes(2, "big")
