"""A TUN TCP flow already ESTABLISHED and the stack's side of its stream, for the tests of
TunTcpStream and what the relay sees (proxy64/tun/flow_stream.py): the flow's
transmissions are recorded instead of written to a TUN.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from proxy64.flow.segment import ACK, SYN, Segment
from proxy64.flow.tcp_flow import (
    Action,
    DialSucceeded,
    SegmentArrived,
    TcpFlow,
    TcpSettings,
    Transmit,
)
from proxy64.flow.wire import TCP, FlowKey
from proxy64.tun.flow_stream import TunTcpStream

KEY = FlowKey(TCP, (IPv6Address("fd64::2"), 40000), (IPv6Address("2001:db8:64::7f00:1"), 80))


class Recorder:
    """The stack's side of the stream: keeps what the flow asked to transmit."""

    def __init__(self) -> None:
        self.sent: list[Segment] = []

    def execute(self, key: FlowKey, flow: TcpFlow, actions: list[Action]) -> None:
        self.sent += [a.segment for a in actions if isinstance(a, Transmit)]

    def cork(self, stream: TunTcpStream) -> None:
        pass


def established(capacity: int = 4 << 20) -> TcpFlow:
    settings = TcpSettings(mss=65460, rx_capacity=capacity, tx_capacity=capacity,
                           max_retries=8, tso=True)  # fmt: skip
    flow = TcpFlow(Segment(100, 0, SYN, 65535, mss=65460, wscale=7), 5000, settings, 0.0)
    flow.handle(DialSucceeded(), 0.0)
    flow.handle(SegmentArrived(Segment(101, 5001, ACK, 0xFFFF)), 0.0)
    return flow
