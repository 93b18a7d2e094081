"""Pure parsing of option values: listen addresses, DNS servers, prefixes, limits.

Every parser raises ConfigError naming the option and the forms it accepts, so the CLI
and the TOML config file print the same one clear line for a bad value.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from proxy64.defaults import DNS64_EXCLUDED, DNS_LIFETIME, DNS_PORT, DNS_TIMEOUT
from proxy64.errors import AddressMappingError, ConfigError
from proxy64.proto.rfc6052 import Nat64Prefix

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class HostPort:
    host: IPAddress
    port: int

    def __str__(self) -> str:
        if self.host.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return self.host.is_loopback


def parse_host_port(text: str, option: str, default_port: int | None = None) -> HostPort:
    """HOST:PORT, [IPv6]:PORT, a bare IPv6 or IPv4 address (when a default port exists)."""
    forms = "HOST:PORT or [IPv6]:PORT" + (" (port optional)" if default_port else "")
    raw = text.strip()
    host_text: str
    port_text: str | None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ConfigError(option, f"{text!r} has no closing ']'; expected {forms}")
        host_text = raw[1:end]
        rest = raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(option, f"{text!r}: expected {forms}")
        port_text = rest[1:] if rest else None
    elif raw.count(":") == 1:
        host_text, port_text = raw.split(":")
    else:
        host_text, port_text = raw, None  # bare IPv4, or bare IPv6 with several colons
    if host_text == "localhost":
        host_text = "127.0.0.1"
    try:
        host = ip_address(host_text)
    except ValueError:
        raise ConfigError(
            option, f"{text!r}: {host_text!r} is not an IP address; expected {forms}"
        ) from None
    if port_text is None or port_text == "":
        if default_port is None:
            raise ConfigError(option, f"{text!r} has no port; expected {forms}")
        return HostPort(host, default_port)
    return HostPort(host, parse_port(port_text, option))


def _is_digits(text: str) -> bool:
    """ASCII digits only: int() would also take '+80', ' 80', '8_0' and non-ASCII digits."""
    return text.isascii() and text.isdigit()


def parse_port(text: str, option: str) -> int:
    port = int(text) if _is_digits(text) else -1
    if not 0 <= port <= 65535:
        raise ConfigError(option, f"{text!r} is not a port number (0-65535)")
    return port


def parse_prefix(text: str, option: str = "--nat64-prefix") -> Nat64Prefix:
    try:
        return Nat64Prefix.parse(text)
    except AddressMappingError as exc:
        raise ConfigError(option, str(exc)) from None


def parse_prefix_choice(text: str, option: str = "--nat64-prefix") -> Nat64Prefix | None:
    """A prefix, or None for the word "auto" (discover it with RFC 7050)."""
    if text.strip().lower() == "auto":
        return None
    return parse_prefix(text, option)


def parse_network6(text: str, option: str) -> IPv6Network:
    try:
        return IPv6Network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not an IPv6 network like ::ffff:0:0/96") from None


def parse_positive(text: str, option: str, *, integer: bool = False) -> float:
    try:
        value = float(text) if _is_digits(text) or not integer else -1.0
    except ValueError:
        value = -1.0
    if value <= 0 or (integer and value != int(value)):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(option, f"{text!r} is not {kind} greater than zero")
    return value


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """What the DNS64 resolver needs; shared by resolve, dns64, serve, run and tun."""

    servers: tuple[HostPort, ...]  # empty: read /etc/resolv.conf
    prefix: Nat64Prefix | None  # None: discover (RFC 7050), else this prefix
    synthesize_all: bool = False
    excluded: tuple[IPv6Network, ...] = DNS64_EXCLUDED  # RFC 6147 §5.1.4
    mapped: tuple[IPv4Network, ...] = ()  # BIND's "mapped": empty means every IPv4
    timeout: float = DNS_TIMEOUT
    lifetime: float = DNS_LIFETIME


def parse_dns_server(text: str, option: str = "--dns") -> HostPort:
    server = parse_host_port(text, option, default_port=DNS_PORT)
    if server.port == 0:  # a listener's "any free port" means nothing for a server
        raise ConfigError(option, f"{text!r}: a DNS server needs a port from 1 to 65535")
    return server
