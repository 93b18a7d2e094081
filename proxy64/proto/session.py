"""What a session machine and its executor say to each other: the events fed in, the
commands given out.

A session machine (proto/socks_session.py, proto/http_session.py) holds every decision of
one client connection's life: what to answer, what to dial, when to relay, when to give
up, the outcome in words, and its deadlines as values. It touches no socket and no clock.
The executor (net/executor.py, one per connection) carries out its commands in order and
feeds back what happened; it decides nothing about the protocol.

Time is a value: every call carries `now` (the executor's clock, trio time), and the
machine's `deadline` attribute says when it wants to be told the time again (`Tick`);
`math.inf` means never. The executor reads `deadline` after every call.

Ordering: commands are carried out one after another. A `Send` that cannot be written at
once is finished (the executor waits for the client's socket to drain) before the next
command starts, so a reply always precedes the tunnel, and a refusal the close.

Terminal commands (`Relay`, `Close`) end what the machine asks of the connection: after
one of them the executor feeds nothing more, except the outcome of a `Forward` exchange
(HTTP) which is not terminal.

Interruptions: a `Tick` or `ClientLost` may come while the executor still carries out
earlier commands (a `Send` waiting for the client to drain, a `Dial` in flight). When the
machine answers it with commands, those replace everything still queued (the rest of the
waiting `Send` is dropped, a dial in flight abandoned); an empty answer lets the executor
go on waiting.

A protocol's own step that must be awaited (a UDP association, an HTTP forwarding
exchange) is a subclass of `Await`, defined beside the machine; the executor is given one
helper per such subclass and runs it in a task. The helper's result is fed back as an
`Awaited` event (a subclass of it, also the protocol's), or, when it returns none, the
connection is over (the subclass is then terminal).

Modelled on mitmproxy's layers (commands yielded, one server carries them out) and h11's
`receive_data`/`next_event`/`send` (`b""` means EOF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from proxy64.destination import Destination
from proxy64.errors import Proxy64Error

Address = tuple[IPv4Address | IPv6Address, int]

# --- Events: executor → machine ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataReceived:
    """The client's bytes after a `Receive`; b"" is its EOF (a reset reads as one too)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    """The machine's `deadline` has come (now >= deadline)."""


@dataclass(frozen=True, slots=True)
class Connected:
    """The `Dial` succeeded; the executor holds the stream. local: the outbound socket's
    own address (SOCKS BND.ADDR) when the `Dial` asked for it (bound_address), else None."""

    local: Address | None = None


@dataclass(frozen=True, slots=True)
class DialFailed:
    """The `Dial` failed or timed out: the error carries its SOCKS reply, HTTP status and
    the sentence the record keeps."""

    error: Proxy64Error


@dataclass(frozen=True, slots=True)
class ClientLost:
    """Writing to the client failed (it reset or closed): `reason` says how, in words."""

    reason: str


# The outcome of a connection that ended before its client said anything (every front end).
NOTHING_SENT = "client closed the connection without sending anything"


# --- Commands: machine → executor -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write data to the client, all of it, before the next command."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Receive:
    """Read the client's next bytes (waiting for them, until the machine's deadline) and
    feed them as `DataReceived`. answered: the client has just been answered other than by
    a `Send` (a forwarded response): like after a Send, it must read that answer before it
    sends more, so nothing is read before its socket is readable."""

    answered: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """Open the connection's record, or update the open one: what it is (`front_end`, the
    log's "socks5", "socks4", "http-connect", "http", "udp") and where it goes. A dial's
    result (address, how reached, egress) goes into the open record."""

    front_end: str
    destination: Destination | None = None
    # seconds before now that what it records began (a request head that never came
    # whole): the log line's duration covers them
    waited: float = 0.0


@dataclass(frozen=True, slots=True)
class Finish:
    """The open record ends with `outcome`: its one log line (HTTP: a refused request, an
    upstream that is done, on a connection that lives on)."""

    outcome: str


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect to destination through the one dialer; feed `Connected` or `DialFailed`.
    The dial's own bound is the dialer's (--connect-timeout): no deadline is needed.
    bound_address: the machine answers with the outbound socket's own address, which
    `Connected.local` then carries (a getsockname(2) the executor makes only when asked)."""

    destination: Destination
    bound_address: bool = False


@dataclass(frozen=True, slots=True)
class Relay:
    """Terminal: relay client ↔ the dialed stream until both sides end (half-close kept),
    `early` (client bytes that came with the request) first to the destination; the
    record ends with the relay's outcome ("ok", idle, reset...)."""

    early: bytes = b""


@dataclass(frozen=True, slots=True)
class Close:
    """Terminal: after everything sent, end the connection; `outcome` finishes the record
    (if one is open). linger: half-close and drain what the client sends, bounded in time
    and bytes, so a refusal is not destroyed by an RST (RFC 9112 §9.6). reset: close with
    an RST instead (a cut response must not look complete)."""

    outcome: str
    linger: bool = False
    linger_time: float = 0.0
    linger_bytes: int = 0
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Await:
    """A protocol's own step the executor carries out in a task with the helper it was
    given for the subclass (see the module's docstring)."""


@dataclass(frozen=True, slots=True)
class Awaited:
    """What an `Await` helper hands back to the machine (the protocol subclasses it)."""


Event = DataReceived | Tick | Connected | DialFailed | ClientLost | Awaited
Command = Send | Receive | Record | Finish | Dial | Relay | Close | Await


class SessionMachine(Protocol):
    """What the executor needs of any protocol's machine."""

    @property
    def deadline(self) -> float:
        """When to feed `Tick` (trio time); math.inf: no deadline."""
        ...

    def start(self, now: float) -> list[Command]:
        """The connection is accepted: the first commands (usually a Receive)."""
        ...

    def handle(self, event: Event, now: float) -> list[Command]:
        """One event in, the commands it calls for out."""
        ...


NO_DEADLINE = math.inf
