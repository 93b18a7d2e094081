"""One UDP flow from the app (app address/port → remote address/port): a sans-I/O record.

The stack opens one outbound socket per flow through the dialer's udp_target(); until it
is open, datagrams wait in a bounded queue (the oldest is never reordered: a full queue
drops the newcomer, counted). A flow with no datagram either way for `idle` seconds
closes (RFC 4787 REQ-5 asks at least 2 minutes for a NAT mapping; we use TUN_UDP_IDLE,
documented). Nothing here reads a clock: `now` is passed in.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class UdpState(enum.Enum):
    OPENING = "OPENING"  # the target is being resolved and the socket opened
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Open:
    """Resolve the destination and open the outbound socket; answer opened()/failed()."""


@dataclass(frozen=True, slots=True)
class SendOut:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """Write this datagram to the app (from the flow's remote address and port)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The destination cannot be reached: answer the app with an ICMP error."""

    reason: str


@dataclass(frozen=True, slots=True)
class UdpDrop:
    reason: str


@dataclass(frozen=True, slots=True)
class UdpClosed:
    reason: str


UdpAction = Open | SendOut | Deliver | Unreachable | UdpDrop | UdpClosed


class UdpFlow:
    def __init__(self, now: float, *, idle: float, queue_limit: int) -> None:
        self.state = UdpState.OPENING
        self.idle = idle
        self.queue_limit = queue_limit
        self.queue: deque[bytes] = deque()
        self.last_activity = now
        self.datagrams_out = 0
        self.datagrams_in = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def start(self, payload: bytes) -> list[UdpAction]:
        self.queue.append(payload)
        return [Open()]

    def from_app(self, payload: bytes, now: float) -> list[UdpAction]:
        if self.state is UdpState.CLOSED:
            return [UdpDrop("udp-closed-flow")]
        self.last_activity = now
        if self.state is UdpState.OPENING:
            if len(self.queue) >= self.queue_limit:
                return [UdpDrop("udp-queue-full")]
            self.queue.append(payload)
            return []
        self.datagrams_out += 1
        self.bytes_out += len(payload)
        return [SendOut(payload)]

    def opened(self, now: float) -> list[UdpAction]:
        if self.state is not UdpState.OPENING:
            return []
        self.state = UdpState.OPEN
        self.last_activity = now
        actions: list[UdpAction] = []
        while self.queue:
            payload = self.queue.popleft()
            self.datagrams_out += 1
            self.bytes_out += len(payload)
            actions.append(SendOut(payload))
        return actions

    def failed(self, reason: str) -> list[UdpAction]:
        if self.state is UdpState.CLOSED:
            return []
        self.state = UdpState.CLOSED
        self.queue.clear()
        return [Unreachable(reason), UdpClosed(reason)]

    def from_remote(self, payload: bytes, now: float) -> list[UdpAction]:
        if self.state is not UdpState.OPEN:
            return [UdpDrop("udp-reply-after-close")]
        self.last_activity = now
        self.datagrams_in += 1
        self.bytes_in += len(payload)
        return [Deliver(payload)]

    def tick(self, now: float) -> list[UdpAction]:
        if self.state is not UdpState.CLOSED and now - self.last_activity >= self.idle:
            self.state = UdpState.CLOSED
            self.queue.clear()
            return [UdpClosed(f"idle for {self.idle:g} s")]
        return []
