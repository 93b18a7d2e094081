"""parse_authority() parses each host once; it must give exactly the Destination
the text-based path gives (Destination.from_text, then ::ffff:a.b.c.d as IPv4), and the
same refusals. The oracle below is that path, written out as the test's reference."""

from __future__ import annotations

import re
from ipaddress import IPv6Address

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import RemoteProtocolError
from proxy64.proto.httpproxy import parse_authority
from tests.helpers.authorities import HOSTS, PORTS

_REG_NAME = re.compile(rb"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
_IPV4 = re.compile(rb"^\d{1,3}(?:\.\d{1,3}){3}$")
_PORT = re.compile(rb"^\d{1,5}$")


def reference(authority: bytes, default_port: int | None) -> Destination | None:
    """RFC 3986 §3.2 host[:port] through Destination.from_text; None: refused (400)."""
    if b"@" in authority:
        return None
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end < 0:
            return None
        host_text, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(b":"):
            return None
        port_text = rest[1:] if rest else None
        try:
            text = f"[{IPv6Address(host_text.decode('ascii'))}]"
        except (ValueError, UnicodeDecodeError):
            return None
    else:
        host_text, sep, port_part = authority.partition(b":")
        port_text = port_part if sep else None
        if not host_text or not (_REG_NAME.match(host_text) or _IPV4.match(host_text)):
            return None
        text = host_text.decode("ascii")
    if not port_text:
        if default_port is None:
            return None
        port = default_port
    elif not _PORT.match(port_text) or not 1 <= int(port_text) <= 65535:
        return None
    else:
        port = int(port_text)
    destination = Destination.from_text(text, port)
    if isinstance(destination.host, IPv6Address) and destination.host.ipv4_mapped is not None:
        destination = Destination(destination.host.ipv4_mapped, port)
    if isinstance(destination.host, str) and _IPV4.match(host_text):
        return None
    return destination


def outcome(authority: bytes, default_port: int | None) -> Destination | int:
    try:
        return parse_authority(authority, default_port)
    except RemoteProtocolError as exc:
        return exc.http_status


@settings(max_examples=400)
@given(HOSTS, PORTS, st.sampled_from([None, 80]))
@example(b"[::ffff:192.0.2.1]", b":443", None)
@example(b"[fe80::1%eth0]", b":80", None)
@example(b"Example.COM.", b"", 80)
@example(b"999.1.1.1", b":99999", 80)
@example(b"01.2.3.4", b":80", 80)
@example(b"user@host", b":80", 80)
def test_single_parse_gives_the_from_text_destination(
    host: bytes, port: bytes, default_port: int | None
) -> None:
    authority = host + port
    expected = reference(authority, default_port)
    got = outcome(authority, default_port)
    assert got == (400 if expected is None else expected)
    if isinstance(got, Destination):
        assert type(got.host) is type(expected.host if expected else None)


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"[2001:db8::1]:443", IPv6Address("2001:db8::1")),
        (b"[::ffff:192.0.2.1]:443", "192.0.2.1"),
        (b"192.0.2.1:443", "192.0.2.1"),
        (b"WWW.Example.org.:443", "www.example.org"),
    ],
)
def test_rfc3986_3_2_2_host_forms(authority: bytes, host: object) -> None:
    destination = parse_authority(authority, None)
    assert str(destination.host) == str(host) and destination.port == 443
