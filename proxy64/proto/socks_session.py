"""One SOCKS4/4a/5 connection's life as a sans-I/O session machine (proto/session.py).

Every decision is here: the first byte picks the version (a peer that speaks no SOCKS
gets no reply), RFC 1928 §3 method selection and RFC 1929 authentication (with the held
answer of proto/auth_delay.py as a deadline), the handshake deadline (RFC 1928 §6
TTL-expired reply, then linger; a client that sent nothing is closed), the refusal of a
client over --max-connections (after its handshake, 0x01 / 0x5B), the CONNECT dial and
its reply (RFC 1928 §6 BND.ADDR/BND.PORT from the outbound socket), the bytes a client
sent with its request, UDP ASSOCIATE (RFC 1928 §7, carried out by the executor's helper
for `Associate`), and the outcome sentence of every ending. Parsing is the proto
machines' (socks5.py, socks4.py); the handshake policy is socks_dispatch.handshake_step.

Invariants:
- Exactly one terminal command (Relay, Close, Associate) per connection; after it only a
  Tick or ClientLost (a reply or refusal still being written) is answered, with a Close.
- A refusal is written, then the connection lingers (half-close, drain ≤
  SOCKS_LINGER_BYTES for SOCKS_LINGER_TIME) so the client reads it instead of an RST;
  a refusal that cannot be written within SOCKS_LINGER_TIME is dropped and closed.
- The handshake deadline bounds everything before the request, the held answer too: an
  answer due after it is a failure now.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from proxy64.defaults import SOCKS_LINGER_BYTES, SOCKS_LINGER_TIME
from proxy64.destination import Destination
from proxy64.errors import LocalProtocolError, RemoteProtocolError, SocksReply
from proxy64.proto.session import (
    NOTHING_SENT,
    Address,
    Await,
    ClientLost,
    Close,
    Command,
    Connected,
    DataReceived,
    Dial,
    DialFailed,
    Event,
    Receive,
    Record,
    Relay,
    Send,
    Tick,
)
from proxy64.proto.socks4 import Socks4Reply, Socks4Request
from proxy64.proto.socks5 import NEED_DATA, Reply, Request, Socks5Server
from proxy64.proto.socks5 import Command as Socks5Command
from proxy64.proto.socks_dispatch import (
    AuthHold,
    Closed,
    Held,
    SocksMachine,
    handshake_step,
    machine_for,
)

NO_BIND: Address = (IPv4Address(0), 0)
RFC1929_FAILURE = bytes([0x01, 0x01])  # RFC 1929 §2: VER 1, a non-zero STATUS

# Commands without a varying field: one value each (they are immutable).
RECEIVE = Receive()
OPEN_RECORD = Record("socks5")  # every connection of the listener has its line from the start

HELD_TOO_LONG = (
    "authentication not answered within the handshake time: answers to this address are "
    "held back after repeated failures"
)


@dataclass(frozen=True, slots=True)
class Associate(Await):
    """Terminal: RFC 1928 §7 UDP ASSOCIATE for `requested`; the helper binds the relay
    socket, sends the reply `machine` builds, and relays until the control connection
    closes (the record's outcome is the helper's)."""

    machine: Socks5Server
    requested: Destination


class Phase(enum.Enum):
    FIRST_BYTE = "first byte"  # nothing received: the first byte picks the version
    HANDSHAKE = "handshake"  # reading until the request
    HELD = "held"  # an RFC 1929 answer held back until the deadline
    DIALING = "dialing"  # the CONNECT's Dial given
    REPLYING = "replying"  # the success reply and Relay given
    REFUSING = "refusing"  # a refusal and its Close given
    DONE = "done"  # nothing more to decide


def reply_bytes(machine: SocksMachine, code: SocksReply, bind: Address) -> bytes:
    """The request's reply in the client's version (RFC 1928 §6; SOCKS4 0x5A / 0x5B)."""
    if isinstance(machine, Socks5Server):
        return machine.send(Reply(code, bind))
    return machine.send(Socks4Reply(code == SocksReply.SUCCEEDED, bind))


def handshake_timeout_error(seconds: float) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"SOCKS handshake not finished within {seconds:g} s",
        socks_reply=SocksReply.TTL_EXPIRED,
    )


class SocksSession:
    """One client connection of the SOCKS listener (proto/session.py's SessionMachine).

    refusal: the connection holds no --max-connections slot (None: it holds one): the
    handshake runs and the request is refused with this as its outcome. hold: how long to hold
    an RFC 1929 answer with a given result (net/auth_gate.py), None: never."""

    __slots__ = (
        "_handlers",
        "_handshake_deadline",
        "_held",
        "credentials",
        "deadline",
        "handshake_timeout",
        "hold",
        "machine",
        "outcome",
        "phase",
        "refusal",
    )

    def __init__(
        self,
        *,
        handshake_timeout: float,
        credentials: Mapping[str, str] | None = None,
        hold: AuthHold | None = None,
        refusal: str | None = None,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.credentials = credentials
        self.hold = hold
        self.refusal = refusal
        self.machine: SocksMachine | None = None
        self.phase = Phase.FIRST_BYTE
        self.deadline = math.inf
        self.outcome: str | None = None  # decided: a refusal being written
        self._handshake_deadline = math.inf
        self._held: Held | None = None

    # --- the SessionMachine API ---------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        self._handshake_deadline = self.deadline = now + self.handshake_timeout
        return [OPEN_RECORD, RECEIVE]

    def handle(self, event: Event, now: float) -> list[Command]:
        handler = _HANDLERS.get(self.phase._value_)
        if handler is None:
            raise LocalProtocolError(f"SOCKS session: {event!r} in phase {self.phase.name}")
        return handler(self, event, now)

    # --- one handler per phase ------------------------------------------------------------

    def _first_byte(self, event: Event, now: float) -> list[Command]:
        if isinstance(event, DataReceived):
            data = event.data
            if not data:
                return self._close(NOTHING_SENT, linger=True, now=now)
            try:
                machine = machine_for(data[0], require_auth=self.credentials is not None)
            except RemoteProtocolError as error:  # not SOCKS: no reply in any version
                return self._close(str(error))
            self.machine = machine
            self.phase = Phase.HANDSHAKE
            machine.receive_data(data)
            commands = self._step(now)
            if machine.front_end != "socks5":
                commands.insert(0, Record(machine.front_end))
            return commands
        return self._handshake(event, now)

    def _handshake(self, event: Event, now: float) -> list[Command]:
        if isinstance(event, DataReceived):
            assert self.machine is not None
            self.machine.receive_data(event.data)
            return self._step(now)
        if isinstance(event, Tick):
            if now < self._handshake_deadline:
                return []
            error = handshake_timeout_error(self.handshake_timeout)
            if self.machine is None:  # nothing sent at all: nothing to answer
                return self._close(str(error))
            return self._refuse(error, now)
        if isinstance(event, ClientLost):
            return self._close(event.reason)
        raise self._unexpected(event)

    def _holding(self, event: Event, now: float) -> list[Command]:
        held = self._held
        assert held is not None
        if isinstance(event, Tick):
            if now < self.deadline:
                return []
            self._held = None
            if held.closed is not None:
                return [Send(held.reply), *self._close(held.closed.reason, linger=True, now=now)]
            self.phase = Phase.HANDSHAKE
            self.deadline = self._handshake_deadline
            return [Send(held.reply), *self._step(now)]
        if isinstance(event, ClientLost):
            return self._close(event.reason)
        raise self._unexpected(event)

    def _dialing(self, event: Event, now: float) -> list[Command]:
        machine = self.machine
        assert machine is not None
        if isinstance(event, Connected):
            local = event.local if event.local is not None else NO_BIND
            reply = reply_bytes(machine, SocksReply.SUCCEEDED, local)
            early = machine.trailing_data()  # optimistic clients send data with the request
            # a reply of at most 22 bytes to a client that read all we sent: it never waits
            self.phase = Phase.REPLYING
            return [Send(reply), Relay(early)]
        if isinstance(event, DialFailed):
            error = event.error
            reply = reply_bytes(machine, error.socks_reply, NO_BIND)
            return [Send(reply), *self._close(str(error), linger=True, now=now)]
        if isinstance(event, ClientLost):
            return self._close(event.reason)
        if isinstance(event, Tick):
            return []  # the dialer bounds the dial
        raise self._unexpected(event)

    def _replying(self, event: Event, now: float) -> list[Command]:
        """The success reply and Relay are given; the client may vanish before the reply
        is written."""
        if isinstance(event, ClientLost):
            return self._close(event.reason)
        if isinstance(event, Tick):
            return []
        raise self._unexpected(event)

    def _refusing(self, event: Event, now: float) -> list[Command]:
        """A refusal and its Close are given; its Send may still wait for the client."""
        assert self.outcome is not None
        if isinstance(event, Tick):
            if now < self.deadline:
                return []
            return self._close(self.outcome)  # not written within its bound: drop it
        if isinstance(event, ClientLost):
            return self._close(self.outcome)
        raise self._unexpected(event)

    # --- the handshake ------------------------------------------------------------------

    def _step(self, now: float) -> list[Command]:
        machine = self.machine
        assert machine is not None
        output, outcome = handshake_step(machine, self.credentials, self.hold)
        commands: list[Command] = [Send(output)] if output else []
        if outcome is NEED_DATA:
            commands.append(RECEIVE)
        elif isinstance(outcome, Held):
            if now + outcome.seconds >= self._handshake_deadline:
                commands.append(Send(RFC1929_FAILURE))
                commands += self._close(HELD_TOO_LONG, linger=True, now=now)
            else:
                self.phase = Phase.HELD
                self._held = outcome
                self.deadline = now + outcome.seconds
        elif isinstance(outcome, Closed):
            commands += self._close(outcome.reason, linger=True, now=now)
        elif isinstance(outcome, RemoteProtocolError):
            commands += self._refuse(outcome, now)
        else:
            commands += self._request(outcome, now)
        return commands

    def _request(self, request: Request | Socks4Request, now: float) -> list[Command]:
        machine = self.machine
        assert machine is not None
        udp = isinstance(request, Request) and request.command is Socks5Command.UDP_ASSOCIATE
        commands: list[Command] = []
        if not udp:  # a UDP association records its first datagram's destination instead
            commands.append(Record(machine.front_end, request.destination))
        if self.refusal is not None:
            return commands + self._refuse(RemoteProtocolError(self.refusal), now)
        if udp:
            assert isinstance(machine, Socks5Server)
            self.phase = Phase.DONE
            self.deadline = math.inf
            return [Record("udp"), Associate(machine, request.destination)]
        self.phase = Phase.DIALING
        self.deadline = math.inf  # the handshake is over; the dialer bounds the dial
        # RFC 1928 §6: the reply's BND.ADDR/BND.PORT is the outbound socket's own address
        return [*commands, Dial(request.destination, bound_address=True)]

    # --- endings ------------------------------------------------------------------------

    def _refuse(self, error: RemoteProtocolError, now: float) -> list[Command]:
        """The refusal the machine's state calls for, then linger; nothing (and no linger)
        when the state has no answer."""
        assert self.machine is not None
        refusal = self.machine.send_error(error)
        if not refusal:
            return self._close(str(error))
        return [Send(refusal), *self._close(str(error), linger=True, now=now)]

    def _close(self, outcome: str, *, linger: bool = False, now: float = 0.0) -> list[Command]:
        """The terminal Close. With linger, what was sent before it may still be waiting
        for the client: it has SOCKS_LINGER_TIME (a Tick then closes at once)."""
        if linger:
            self.phase = Phase.REFUSING
            self.outcome = outcome
            self.deadline = now + SOCKS_LINGER_TIME
            return [Close(outcome, True, SOCKS_LINGER_TIME, SOCKS_LINGER_BYTES)]
        self.phase = Phase.DONE
        self.deadline = math.inf
        return [Close(outcome)]

    def _unexpected(self, event: Event) -> LocalProtocolError:
        return LocalProtocolError(f"SOCKS session: {event!r} in phase {self.phase.name}")


# One handler per phase (DONE has none: nothing is fed after the terminal command).
# Keyed by the phase's value: a str hashes in C, an Enum member in Python.
_HANDLERS: dict[str, Callable[[SocksSession, Event, float], list[Command]]] = {
    Phase.FIRST_BYTE.value: SocksSession._first_byte,
    Phase.HANDSHAKE.value: SocksSession._handshake,
    Phase.HELD.value: SocksSession._holding,
    Phase.DIALING.value: SocksSession._dialing,
    Phase.REPLYING.value: SocksSession._replying,
    Phase.REFUSING.value: SocksSession._refusing,
}
