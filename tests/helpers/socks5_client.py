"""The tests' SOCKS5 client (RFC 1928), written for tests, not for production.

Blocking (the network tests): CONNECT to read the exact reply code, UDP ASSOCIATE with the
§7 datagram header; every socket operation has a timeout so a bug fails instead of hanging.
trio (the front-end tests): socks5_handshake() on a stream or a trio socket the test
connected, open_socks5() to connect and do it in one call.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import trio

from tests.helpers.streams import Readable, receive_exactly, send_all

TIMEOUT = 8.0
NO_AUTH_GREETING = b"\x05\x01\x00"  # RFC 1928 §3: one method, no authentication
VERSION = 5
NO_AUTH = 0
CMD_CONNECT = 1
CMD_UDP_ASSOCIATE = 3
ATYP_IPV4 = 1
ATYP_DOMAIN = 3
ATYP_IPV6 = 4


class Socks5Failure(Exception):
    def __init__(self, reply: int) -> None:
        super().__init__(f"SOCKS5 reply {reply}")
        self.reply = reply


def encode_address(host: str, port: int) -> bytes:
    """RFC 1928 §4/§7 ATYP + address + port."""
    try:
        address = ip_address(host)
    except ValueError:
        name = host.encode("idna")
        return bytes([ATYP_DOMAIN, len(name)]) + name + struct.pack("!H", port)
    atyp = ATYP_IPV4 if isinstance(address, IPv4Address) else ATYP_IPV6
    return bytes([atyp]) + address.packed + struct.pack("!H", port)


def decode_address(data: bytes) -> tuple[str, int, int]:
    """(host, port, bytes used) from ATYP + address + port."""
    atyp = data[0]
    if atyp == ATYP_IPV4:
        end = 5
        host = str(IPv4Address(data[1:end]))
    elif atyp == ATYP_IPV6:
        end = 17
        host = str(IPv6Address(data[1:end]))
    elif atyp == ATYP_DOMAIN:
        end = 2 + data[1]
        host = data[2:end].decode("idna")
    else:
        raise ValueError(f"unknown ATYP {atyp}")
    (port,) = struct.unpack("!H", data[end : end + 2])
    return host, port, end + 2


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"proxy closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def _request(sock: socket.socket, command: int, host: str, port: int) -> tuple[str, int]:
    sock.settimeout(TIMEOUT)
    sock.sendall(bytes([VERSION, 1, NO_AUTH]))
    assert _recv_exact(sock, 2) == bytes([VERSION, NO_AUTH])
    sock.sendall(bytes([VERSION, command, 0]) + encode_address(host, port))
    version, reply, _reserved, atyp = _recv_exact(sock, 4)
    assert version == VERSION
    length = {ATYP_IPV4: 4, ATYP_IPV6: 16}.get(atyp)
    rest = _recv_exact(sock, (length if length is not None else _recv_exact(sock, 1)[0]) + 2)
    if reply != 0:
        raise Socks5Failure(reply)
    bound_host, bound_port, _ = decode_address(bytes([atyp]) + rest)
    return bound_host, bound_port


def connect(sock: socket.socket, host: str, port: int) -> tuple[str, int]:
    """CONNECT on a socket already connected to the proxy; Socks5Failure on a reply != 0."""
    return _request(sock, CMD_CONNECT, host, port)


def udp_associate(sock: socket.socket, client_host: str = "0.0.0.0") -> tuple[str, int]:
    """UDP ASSOCIATE (RFC 1928 §4); returns the relay address to send datagrams to."""
    return _request(sock, CMD_UDP_ASSOCIATE, client_host, 0)


def udp_datagram(host: str, port: int, payload: bytes) -> bytes:
    """RFC 1928 §7: RSV(2) FRAG(1)=0 ATYP DST.ADDR DST.PORT DATA."""
    return b"\x00\x00\x00" + encode_address(host, port) + payload


def parse_udp_datagram(data: bytes) -> tuple[str, int, bytes]:
    assert data[:2] == b"\x00\x00" and data[2] == 0, "RSV and FRAG must be zero"
    host, port, used = decode_address(data[3:])
    return host, port, data[3 + used :]


# --- trio ------------------------------------------------------------------------------------


def connect_request(host: str, port: int) -> bytes:
    """RFC 1928 §4: CONNECT to host (an IPv4/IPv6 literal or a name) and port."""
    return bytes([VERSION, CMD_CONNECT, 0]) + encode_address(host, port)


async def read_reply(source: Readable) -> bytes:
    """One whole RFC 1928 §6 reply: VER REP RSV ATYP BND.ADDR BND.PORT."""
    head = await receive_exactly(source, 4)
    if head[3] == ATYP_DOMAIN:
        size = await receive_exactly(source, 1)
        return head + size + await receive_exactly(source, size[0] + 2)
    return head + await receive_exactly(source, {ATYP_IPV4: 4, ATYP_IPV6: 16}[head[3]] + 2)


async def socks5_handshake(
    conn: Readable,
    request: bytes,
    *,
    greeting: bytes = NO_AUTH_GREETING,
    greeting_reply: bytes = bytes([VERSION, NO_AUTH]),
) -> bytes:
    """Greeting (with RFC 1929 sub-negotiation bytes when the test includes them),
    `greeting_reply` expected back, then the request; the whole reply."""
    await send_all(conn, greeting)
    assert await receive_exactly(conn, len(greeting_reply)) == greeting_reply
    await send_all(conn, request)
    return await read_reply(conn)


async def open_socks5(
    address: tuple[str, int], request: bytes, **handshake: bytes
) -> tuple[trio.SocketStream, bytes]:
    """Connect to the proxy and do socks5_handshake(); the stream and the reply."""
    stream = await trio.open_tcp_stream(*address)
    try:
        return stream, await socks5_handshake(stream, request, **handshake)
    except BaseException:
        stream.socket.close()
        raise
