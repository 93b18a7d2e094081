"""SOCKS5 server side (RFC 1928) with username/password authentication (RFC 1929), sans-I/O.

The h11 shape: receive_data(bytes) (b"" is EOF), next_event() -> event | NEED_DATA,
send(event) -> bytes. States alternate between the client's turn (GREETING, AUTH, REQUEST)
and ours (METHOD_SELECTION, AUTH_REPLY, REPLY); next_event() parses only on the client's
turn and send() accepts only the event our turn calls for. Bytes the client sent after its
request stay buffered for the relay (trailing_data()); one read is never one message.

A malformed message raises RemoteProtocolError carrying the §6 reply code; send_error()
turns it into the bytes the current state calls for: 0xFF "no acceptable methods" (§3),
an RFC 1929 §2 failure status, or a §6 reply. The address codec (§5) is shared with the
UDP header (socks5_udp.py) and lives in socks_address.py.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply
from proxy64.proto.socks_address import encode_address, parse_address

IPAddress = IPv4Address | IPv6Address

SOCKS5_VERSION = 0x05  # RFC 1928 §3
AUTH_VERSION = 0x01  # RFC 1929 §2 sub-negotiation version


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[Sentinel.NEED_DATA] = Sentinel.NEED_DATA


class Method(enum.IntEnum):
    """RFC 1928 §3 METHOD values proxy64 knows."""

    NO_AUTH = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02  # RFC 1929
    NO_ACCEPTABLE = 0xFF


class Command(enum.IntEnum):
    """RFC 1928 §4 CMD values."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class State(enum.Enum):
    GREETING = "GREETING"  # client's turn: VER NMETHODS METHODS
    METHOD_SELECTION = "METHOD_SELECTION"  # our turn: VER METHOD
    AUTH = "AUTH"  # client's turn: RFC 1929 VER ULEN UNAME PLEN PASSWD
    AUTH_REPLY = "AUTH_REPLY"  # our turn: VER STATUS
    REQUEST = "REQUEST"  # client's turn: VER CMD RSV ATYP DST.ADDR DST.PORT
    REPLY = "REPLY"  # our turn: VER REP RSV ATYP BND.ADDR BND.PORT
    ESTABLISHED = "ESTABLISHED"  # handshake done: bytes belong to the relay
    CLOSED = "CLOSED"  # a refusal or error was sent; nothing more


# --- Events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """RFC 1928 §3: the methods the client offers, in its order."""

    methods: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MethodSelection:
    method: Method


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """RFC 1929 §2. Text is decoded UTF-8 with surrogateescape: never fails, never matches
    a configured password by accident when the bytes are not UTF-8."""

    username: str
    password: str

    def __repr__(self) -> str:  # never log a password
        return f"AuthRequest(username={self.username!r}, password=<{len(self.password)} chars>)"


@dataclass(frozen=True, slots=True)
class AuthReply:
    success: bool


@dataclass(frozen=True, slots=True)
class Request:
    """RFC 1928 §4: CONNECT or UDP ASSOCIATE (BIND is refused while parsing)."""

    command: Command
    destination: Destination


@dataclass(frozen=True, slots=True)
class Reply:
    """RFC 1928 §6. bind is BND.ADDR/BND.PORT: the outbound socket for CONNECT, the relay
    socket for UDP ASSOCIATE, 0.0.0.0:0 on failure."""

    code: SocksReply
    bind: tuple[IPAddress, int] = (IPv4Address(0), 0)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side at a message boundary (before sending anything more)."""


ClientEvent = Greeting | AuthRequest | Request | ConnectionClosed
ServerEvent = MethodSelection | AuthReply | Reply


# --- Policy helpers (pure) -------------------------------------------------------------


def select_method(offered: tuple[int, ...], *, require_auth: bool) -> Method:
    """RFC 1928 §3 choice. With credentials configured only RFC 1929 is acceptable; without,
    no-auth is preferred, and a client that offers only username/password is let in."""
    if require_auth:
        return (
            Method.USERNAME_PASSWORD
            if Method.USERNAME_PASSWORD in offered
            else (Method.NO_ACCEPTABLE)
        )
    if Method.NO_AUTH in offered:
        return Method.NO_AUTH
    if Method.USERNAME_PASSWORD in offered:
        return Method.USERNAME_PASSWORD
    return Method.NO_ACCEPTABLE


_METHOD_NAMES = {0x00: "no-auth", 0x01: "GSSAPI", 0x02: "username/password"}


def describe_methods(offered: tuple[int, ...]) -> str:
    """The methods a client offered, for a person: "no-auth, 0x80"."""
    return ", ".join(_METHOD_NAMES.get(m, f"0x{m:02x}") for m in offered)


def credentials_match(credentials: Mapping[str, str] | None, auth: AuthRequest) -> bool:
    """True when auth names a configured user with its password (None: anyone is let in)."""
    if credentials is None:
        return True
    expected = credentials.get(auth.username)
    if expected is None:
        hmac.compare_digest(auth.password, auth.password)  # same work for unknown users
        return False
    return hmac.compare_digest(
        expected.encode(errors="surrogateescape"), auth.password.encode(errors="surrogateescape")
    )


def encode_reply(reply: Reply) -> bytes:
    address, port = reply.bind
    return bytes([SOCKS5_VERSION, reply.code, 0x00]) + encode_address(address, port)


# --- The client's bytes (shared by the SOCKS4 machine) ---------------------------------


class ClientBytes:
    """What both SOCKS server machines do with the client's bytes: buffer them (b"" is
    EOF), say what running out of them means, and hand what follows the request to the
    relay. One read is never one message, so a message may end only at EOF."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data after EOF")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def _out_of_data(self, what: str) -> Literal[Sentinel.NEED_DATA] | ConnectionClosed:
        """No whole message is buffered: wait for more, or at EOF a clean close (nothing
        pending: the caller moves to CLOSED) or a message cut off (RemoteProtocolError)."""
        if not self._eof:
            return NEED_DATA
        if not self._buffer:
            return ConnectionClosed()
        raise RemoteProtocolError(
            f"client closed the connection in the middle of its {what} "
            f"({len(self._buffer)} bytes received)"
        )

    def _take_trailing(self, established: bool, state: str) -> bytes:
        """Bytes the client sent after its request: the first bytes for the destination."""
        if not established:
            raise LocalProtocolError(f"trailing_data() in state {state}")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


# --- The machine -----------------------------------------------------------------------

_CLIENT_TURN = {State.GREETING: "greeting", State.AUTH: "authentication", State.REQUEST: "request"}


class Socks5Server(ClientBytes):
    """The server side of one SOCKS5 connection."""

    front_end = "socks5"

    def __init__(self, *, require_auth: bool = False) -> None:
        super().__init__()
        self.require_auth = require_auth
        self.state = State.GREETING
        self._offered: tuple[int, ...] = ()

    # receiving -------------------------------------------------------------------------

    def next_event(self) -> ClientEvent | Literal[Sentinel.NEED_DATA]:
        parser = _PARSERS.get(self.state)
        if parser is None:
            raise LocalProtocolError(
                f"next_event() in state {self.state.name}: not the client's turn"
            )
        event = parser(self)
        if event is not None:
            return event
        out = self._out_of_data(f"SOCKS5 {_CLIENT_TURN[self.state]}")
        if isinstance(out, ConnectionClosed):
            self.state = State.CLOSED
        return out

    def trailing_data(self) -> bytes:
        """Bytes the client sent after its request: the first bytes for the destination."""
        return self._take_trailing(self.state is State.ESTABLISHED, self.state.name)

    def _parse_greeting(self) -> Greeting | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != SOCKS5_VERSION:
            raise RemoteProtocolError(
                f"expected SOCKS version 5 in the greeting, got 0x{buf[0]:02x}"
            )
        if len(buf) < 2:
            return None
        count = buf[1]
        if count == 0:
            raise RemoteProtocolError(
                "the greeting offers no authentication method (NMETHODS is 0, RFC 1928 §3)"
            )
        if len(buf) < 2 + count:
            return None
        methods = tuple(buf[2 : 2 + count])
        del buf[: 2 + count]
        self._offered = methods
        self.state = State.METHOD_SELECTION
        return Greeting(methods)

    def _parse_auth(self) -> AuthRequest | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != AUTH_VERSION:
            raise RemoteProtocolError(
                f"expected username/password sub-negotiation version 1 (RFC 1929 §2), "
                f"got 0x{buf[0]:02x}",
                socks_reply=SocksReply.NOT_ALLOWED,
            )
        if len(buf) < 2:
            return None
        ulen = buf[1]
        if len(buf) < 2 + ulen + 1:
            return None
        plen = buf[2 + ulen]
        end = 3 + ulen + plen
        if len(buf) < end:
            return None
        username = bytes(buf[2 : 2 + ulen]).decode("utf-8", "surrogateescape")
        password = bytes(buf[3 + ulen : end]).decode("utf-8", "surrogateescape")
        del buf[:end]
        self.state = State.AUTH_REPLY
        return AuthRequest(username, password)

    def _parse_request(self) -> Request | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != SOCKS5_VERSION:
            raise RemoteProtocolError(
                f"expected SOCKS version 5 in the request, got 0x{buf[0]:02x}"
            )
        if len(buf) < 2:
            return None
        if buf[1] not in tuple(Command):
            raise RemoteProtocolError(
                f"unknown SOCKS5 command 0x{buf[1]:02x}; RFC 1928 §4 defines CONNECT (1), "
                "BIND (2) and UDP ASSOCIATE (3)",
                socks_reply=SocksReply.COMMAND_NOT_SUPPORTED,
            )
        command = Command(buf[1])
        if len(buf) < 3:
            return None
        if buf[2] != 0x00:
            raise RemoteProtocolError(
                f"the reserved byte of the request must be 0x00, got 0x{buf[2]:02x}"
            )
        parsed = parse_address(buf, 3, where="request")
        if parsed is None:
            return None
        destination, end = parsed
        if command is Command.BIND:
            raise RemoteProtocolError(
                f"BIND to {destination} is not supported: proxy64 relays CONNECT and UDP "
                "ASSOCIATE only",
                socks_reply=SocksReply.COMMAND_NOT_SUPPORTED,
            )
        if command is Command.CONNECT and destination.port == 0:
            raise RemoteProtocolError(f"CONNECT to port 0 ({destination}) is not possible")
        del buf[:end]
        self.state = State.REPLY
        return Request(command, destination)

    # sending ---------------------------------------------------------------------------

    def send(self, event: ServerEvent) -> bytes:
        if self.state is State.METHOD_SELECTION and isinstance(event, MethodSelection):
            return self._send_method(event.method)
        if self.state is State.AUTH_REPLY and isinstance(event, AuthReply):
            self.state = State.REQUEST if event.success else State.CLOSED
            return bytes([AUTH_VERSION, 0x00 if event.success else 0x01])
        if self.state is State.REPLY and isinstance(event, Reply):
            self.state = State.ESTABLISHED if event.code == SocksReply.SUCCEEDED else (State.CLOSED)
            return encode_reply(event)
        raise LocalProtocolError(f"cannot send {event!r} in state {self.state.name}")

    def _send_method(self, method: Method) -> bytes:
        if method is Method.NO_ACCEPTABLE:
            self.state = State.CLOSED
        elif method not in self._offered:
            raise LocalProtocolError(f"method {method.name} was not offered by the client")
        elif method is Method.NO_AUTH:
            self.state = State.REQUEST
        elif method is Method.USERNAME_PASSWORD:
            self.state = State.AUTH
        else:
            raise LocalProtocolError(f"method {method.name} is not implemented")
        return bytes([SOCKS5_VERSION, method])

    def send_error(self, error: RemoteProtocolError) -> bytes:
        """The refusal this state calls for; the connection is then closed."""
        state, self.state = self.state, State.CLOSED
        if state in (State.GREETING, State.METHOD_SELECTION):
            return bytes([SOCKS5_VERSION, Method.NO_ACCEPTABLE])  # RFC 1928 §3
        if state in (State.AUTH, State.AUTH_REPLY):
            return bytes([AUTH_VERSION, 0x01])  # RFC 1929 §2: non-zero status is failure
        if state in (State.REQUEST, State.REPLY):
            return encode_reply(Reply(error.socks_reply))
        return b""


# The client's turns, as unbound functions: a table of bound methods on each machine
# would make every machine a reference cycle, left to the cyclic collector.
_PARSERS: dict[State, Callable[[Socks5Server], ClientEvent | None]] = {
    State.GREETING: Socks5Server._parse_greeting,
    State.AUTH: Socks5Server._parse_auth,
    State.REQUEST: Socks5Server._parse_request,
}
