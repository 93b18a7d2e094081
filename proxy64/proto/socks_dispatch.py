"""One SOCKS listener for both versions: the first byte a client sends picks the machine.

RFC 1928 §3 starts with VER=0x05, SOCKS4/4a with VN=0x04. Anything else is not a SOCKS
client; the error names what it probably is (an HTTP or TLS client on the wrong port), and
no bytes are sent back since the peer speaks neither version.
"""

from __future__ import annotations

from proxy64.errors import RemoteProtocolError
from proxy64.proto.socks4 import SOCKS4_VERSION, Socks4Server
from proxy64.proto.socks5 import SOCKS5_VERSION, Socks5Server

SocksMachine = Socks5Server | Socks4Server

TLS_HANDSHAKE = 0x16  # TLS record type "handshake": a ClientHello


def machine_for(first_byte: int, *, require_auth: bool) -> SocksMachine:
    if first_byte == SOCKS5_VERSION:
        return Socks5Server(require_auth=require_auth)
    if first_byte == SOCKS4_VERSION:
        return Socks4Server(require_auth=require_auth)
    hint = ""
    if 0x41 <= first_byte <= 0x5A:  # "GET", "CONNECT", "POST", ...
        hint = f" ({chr(first_byte)!r}: an HTTP client? point it at the HTTP proxy port)"
    elif first_byte == TLS_HANDSHAKE:
        hint = " (a TLS ClientHello: the client expects an HTTPS server, not a SOCKS proxy)"
    raise RemoteProtocolError(
        f"not a SOCKS client: the first byte is 0x{first_byte:02x}, expected 0x05 (SOCKS5) "
        f"or 0x04 (SOCKS4){hint}"
    )
