"""The vocabulary of the TUN TCP endpoint: its states, events and actions (all values).

RFC 9293 §3.3.2 state names; events go into TcpFlow.handle(), actions come out of it and
the stack carries them out (proxy64/tun/stack.py). Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proxy64.flow.segment import Segment


class TcpState(enum.Enum):
    """RFC 9293 §3.3.2 states. LISTEN here holds the app's SYN while we dial."""

    LISTEN = "LISTEN"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


SYNCHRONIZED = frozenset(TcpState) - {TcpState.LISTEN, TcpState.SYN_RECEIVED, TcpState.CLOSED}
RECEIVES_DATA = frozenset({TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2})
SENDS_DATA = frozenset(
    {
        TcpState.ESTABLISHED,
        TcpState.CLOSE_WAIT,
        TcpState.FIN_WAIT_1,
        TcpState.CLOSING,
        TcpState.LAST_ACK,
    }
)


class Refusal(enum.Enum):
    """How a failed dial is reported to the app (the stack maps it to RST or ICMP)."""

    RESET = "connection refused"  # TCP RST
    NO_ROUTE = "network unreachable"  # ICMPv6 1/0, ICMP 3/0
    ADDRESS_UNREACHABLE = "host unreachable"  # ICMPv6 1/3, ICMP 3/1
    PROHIBITED = "administratively prohibited"  # ICMPv6 1/1, ICMP 3/13


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SegmentArrived:
    segment: Segment


@dataclass(frozen=True, slots=True)
class DialSucceeded:
    pass


@dataclass(frozen=True, slots=True)
class DialFailed:
    refusal: Refusal
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """The deadline passed (or may have): retransmit what is due."""


@dataclass(frozen=True, slots=True)
class PathMtu:
    """RFC 8201: a Packet Too Big for this flow; mss is the new largest payload."""

    mss: int


Event = SegmentArrived | DialSucceeded | DialFailed | Tick | PathMtu


# --- actions -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transmit:
    segment: Segment


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial the flow's destination; answer with DialSucceeded or DialFailed."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the held SYN with an ICMP unreachable of this kind (never RESET)."""

    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Readable:
    """Data or EOF arrived for the stream's reader."""


@dataclass(frozen=True, slots=True)
class Writable:
    """Send buffer space was freed (the app acknowledged data)."""


@dataclass(frozen=True, slots=True)
class AckLater:
    """An ACK is due: call flush_ack() once the current batch of packets is handled."""


@dataclass(frozen=True, slots=True)
class Drop:
    """A segment was dropped; the reason is counted by the table."""

    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The flow will send no more packets; reset tells whether it ended abnormally."""

    reason: str
    reset: bool


Action = Transmit | Dial | Reject | Readable | Writable | AckLater | Drop | Closed
