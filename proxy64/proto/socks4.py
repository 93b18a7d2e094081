"""SOCKS4 and SOCKS4a server side, sans-I/O (the same shape as socks5.py).

SOCKS4 (Lee, "SOCKS: A protocol for TCP proxy across firewalls"):
    VN=4 CD DSTPORT(2) DSTIP(4) USERID NUL
SOCKS4a (Lee, "SOCKS 4A"): DSTIP 0.0.0.x with x != 0 means a host name follows:
    ... USERID NUL HOSTNAME NUL
Reply: VN=0 CD DSTPORT(2) DSTIP(4) with CD 0x5A granted, 0x5B rejected or failed.

Only CONNECT is served (BIND is refused with 0x5B). The USERID is read and ignored: SOCKS4
has no password, so when credentials are configured every SOCKS4 request is refused and
the error says to use SOCKS5. USERID and HOSTNAME are bounded (defaults.SOCKS4_MAX_FIELD)
so a client cannot make us buffer without end while we wait for a NUL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from proxy64.defaults import SOCKS4_MAX_FIELD
from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply
from proxy64.proto.socks5 import ClientBytes, ConnectionClosed, Sentinel
from proxy64.proto.socks_address import decode_host

IPAddress = IPv4Address | IPv6Address

SOCKS4_VERSION = 0x04
REPLY_VERSION = 0x00
GRANTED = 0x5A
REJECTED = 0x5B
CMD_CONNECT = 0x01
CMD_BIND = 0x02


class State(enum.Enum):
    REQUEST = "REQUEST"  # client's turn
    REPLY = "REPLY"  # our turn
    ESTABLISHED = "ESTABLISHED"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Socks4Request:
    destination: Destination
    userid: bytes
    socks4a: bool  # the host came as a name (SOCKS4a), not as DSTIP


@dataclass(frozen=True, slots=True)
class Socks4Reply:
    granted: bool
    bind: tuple[IPAddress, int] = (IPv4Address(0), 0)


ClientEvent = Socks4Request | ConnectionClosed


def encode_reply(reply: Socks4Reply) -> bytes:
    address, port = reply.bind
    # DSTIP/DSTPORT of the reply are "ignored" by clients; an IPv6 bind cannot be said.
    packed = address.packed if isinstance(address, IPv4Address) else bytes(4)
    code = GRANTED if reply.granted else REJECTED
    return bytes([REPLY_VERSION, code]) + port.to_bytes(2, "big") + packed


class Socks4Server(ClientBytes):
    """The server side of one SOCKS4/4a connection."""

    front_end = "socks4"

    def __init__(self, *, require_auth: bool = False) -> None:
        super().__init__()
        self.require_auth = require_auth
        self.state = State.REQUEST

    def next_event(self) -> ClientEvent | Literal[Sentinel.NEED_DATA]:
        if self.state is not State.REQUEST:
            raise LocalProtocolError(
                f"next_event() in state {self.state.name}: not the client's turn"
            )
        event = self._parse_request()
        if event is not None:
            return event
        out = self._out_of_data("SOCKS4 request")
        if isinstance(out, ConnectionClosed):
            self.state = State.CLOSED
        return out

    def trailing_data(self) -> bytes:
        return self._take_trailing(self.state is State.ESTABLISHED, self.state.name)

    def _field(self, start: int, what: str) -> int | None:
        """Index of the NUL ending a field that starts at start, None if not here yet."""
        end = self._buffer.find(0, start, start + SOCKS4_MAX_FIELD + 1)
        if end >= 0:
            return end
        if len(self._buffer) - start > SOCKS4_MAX_FIELD:
            raise RemoteProtocolError(f"SOCKS4 {what} has no NUL within {SOCKS4_MAX_FIELD} bytes")
        return None

    def _parse_request(self) -> Socks4Request | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != SOCKS4_VERSION:
            raise RemoteProtocolError(
                f"expected SOCKS version 4 in the request, got 0x{buf[0]:02x}"
            )
        if len(buf) < 2:
            return None
        command = buf[1]
        if command not in (CMD_CONNECT, CMD_BIND):
            raise RemoteProtocolError(
                f"unknown SOCKS4 command 0x{command:02x}; SOCKS4 defines CONNECT (1) and BIND (2)",
                socks_reply=SocksReply.COMMAND_NOT_SUPPORTED,
            )
        if len(buf) < 8:
            return None
        port = int.from_bytes(buf[2:4], "big")
        ip = IPv4Address(bytes(buf[4:8]))
        user_end = self._field(8, "user id")
        if user_end is None:
            return None
        userid = bytes(buf[8:user_end])
        end = user_end + 1
        socks4a = ip.packed[:3] == b"\0\0\0" and ip.packed[3] != 0
        destination: Destination
        if socks4a:
            name_end = self._field(end, "host name")
            if name_end is None:
                return None
            host = decode_host(bytes(buf[end:name_end]), where="SOCKS4a request")
            destination = Destination(host, port)
            end = name_end + 1
        elif ip == IPv4Address(0):
            raise RemoteProtocolError("SOCKS4 request for 0.0.0.0 (no destination address)")
        else:
            destination = Destination(ip, port)
        if command == CMD_BIND:
            raise RemoteProtocolError(
                f"SOCKS4 BIND to {destination} is not supported: proxy64 relays CONNECT only",
                socks_reply=SocksReply.COMMAND_NOT_SUPPORTED,
            )
        if port == 0:
            raise RemoteProtocolError(f"CONNECT to port 0 ({destination}) is not possible")
        if self.require_auth:
            raise RemoteProtocolError(
                "SOCKS4 has no password field and this proxy requires username/password "
                "authentication: use SOCKS5 (socks5h://USER:PASSWORD@HOST:PORT)",
                socks_reply=SocksReply.NOT_ALLOWED,
            )
        del buf[:end]
        self.state = State.REPLY
        return Socks4Request(destination, userid, socks4a)

    def send(self, event: Socks4Reply) -> bytes:
        if self.state is not State.REPLY:
            raise LocalProtocolError(f"cannot send {event!r} in state {self.state.name}")
        self.state = State.ESTABLISHED if event.granted else State.CLOSED
        return encode_reply(event)

    def send_error(self, error: RemoteProtocolError) -> bytes:
        """0x5B for any failure while the client waits for a reply; nothing afterwards."""
        state, self.state = self.state, State.CLOSED
        if state in (State.REQUEST, State.REPLY):
            return encode_reply(Socks4Reply(granted=False))
        return b""
