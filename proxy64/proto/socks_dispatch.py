"""One SOCKS listener for both versions: the first byte a client sends picks the machine.

RFC 1928 §3 starts with VER=0x05, SOCKS4/4a with VN=0x04. Anything else is not a SOCKS
client; the error names what it probably is (an HTTP or TLS client on the wrong port), and
no bytes are sent back since the peer speaks neither version.

handshake_step() is the handshake's policy (RFC 1928 §3 method choice, RFC 1929 check,
what each early close means), shared by the task-based handler and the hub-driven front
end, so both send the same bytes and record the same outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from proxy64.errors import RemoteProtocolError
from proxy64.proto.socks4 import SOCKS4_VERSION, Socks4Request, Socks4Server
from proxy64.proto.socks5 import (
    NEED_DATA,
    SOCKS5_VERSION,
    AuthReply,
    AuthRequest,
    ConnectionClosed,
    Greeting,
    Method,
    MethodSelection,
    Request,
    Sentinel,
    Socks5Server,
    credentials_match,
    describe_methods,
    select_method,
)
from proxy64.proto.socks5 import State as Socks5State

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


# --- One handshake step, shared by the task path and the hub-driven front end -----------


@dataclass(frozen=True, slots=True)
class Held:
    """An RFC 1929 answer to hold for `seconds` (the address keeps failing, see
    proto/auth_delay.py): send `reply` after the hold, then end with `closed` (a failure)
    or go on with the handshake (None)."""

    seconds: float
    reply: bytes
    closed: Closed | None


@dataclass(frozen=True, slots=True)
class Closed:
    """The handshake ended without a request (a refused method, failed authentication, the
    client closed): `reason` is the connection's outcome; the server lingers, then closes."""

    reason: str


Outcome = (
    Literal[Sentinel.NEED_DATA] | Request | Socks4Request | Closed | Held | RemoteProtocolError
)
# How long to hold the answer to an authentication with this outcome (AuthGate.for_client).
AuthHold = Callable[[bool], float]


def handshake_step(
    machine: SocksMachine, credentials: Mapping[str, str] | None, hold: AuthHold | None = None
) -> tuple[bytes, Outcome]:
    """Run the machine over what it has buffered: the bytes to send (in order) and where
    the handshake stands. NEED_DATA: feed more bytes, call again. A request: the caller
    dials and sends the reply. Closed / RemoteProtocolError: send the bytes, then (for an
    error) machine.send_error(error), linger and close. Held: send the bytes, wait, send
    its reply, then close (a failure) or call again. Nothing here waits or raises a
    peer's error: the bytes already owed (a method selection) are never lost."""
    out = b""
    try:
        while True:
            state = machine.state
            event = machine.next_event()
            if event is NEED_DATA:
                return out, NEED_DATA
            if isinstance(event, Greeting):
                assert isinstance(machine, Socks5Server)
                method = select_method(event.methods, require_auth=machine.require_auth)
                out += machine.send(MethodSelection(method))
                if method is Method.NO_ACCEPTABLE:
                    return out, Closed(_no_method(event.methods, machine.require_auth))
            elif isinstance(event, AuthRequest):
                assert isinstance(machine, Socks5Server)
                ok = credentials_match(credentials, event)
                reply = machine.send(AuthReply(ok))
                failed = None if ok else Closed(
                    f"authentication failed for user {event.username!r} (RFC 1929)"
                )  # fmt: skip
                seconds = hold(ok) if hold is not None else 0.0
                if seconds > 0:
                    return out, Held(seconds, reply, failed)
                out += reply
                if failed is not None:
                    return out, failed
            elif isinstance(event, ConnectionClosed):
                if state is Socks5State.AUTH:
                    return out, Closed("client closed the connection before authenticating")
                return out, Closed("client closed the connection before sending its request")
            else:
                return out, event
    except RemoteProtocolError as error:
        return out, error


def _no_method(offered: tuple[int, ...], require_auth: bool) -> str:
    described = describe_methods(offered)
    if require_auth:
        return (
            f"authentication required: the client offered {described} but not "
            "username/password (RFC 1929); give the client the proxy's user and password"
        )
    return f"the client offered only methods proxy64 does not support: {described}"
