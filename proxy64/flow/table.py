"""The bounded flow table of TUN mode: which packets start, continue or are refused flows.

Invariants: at most max_flows flows (TCP + UDP) and at most max_half_open TCP flows that
have not finished their handshake (a SYN flood costs a bounded table, never unbounded
dials); every packet that is not used is counted under a reason, and drops (silent) are
counted apart from rejects (answered with RST or ICMP), as tayga separates them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from proxy64.flow.segment import ACK, RST, Segment, seq_add
from proxy64.flow.tcp_flow import TcpFlow, TcpSettings, TcpState
from proxy64.flow.udp_flow import UdpFlow
from proxy64.flow.wire import FlowKey

_HALF_OPEN = (TcpState.LISTEN, TcpState.SYN_RECEIVED)


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer with this RST (RFC 9293 §3.10.7.1: what a CLOSED port sends)."""

    reset: Segment
    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


def reset_for(seg: Segment) -> Segment:
    """RFC 9293 §3.10.7.1: the RST a closed port sends in answer to seg."""
    if seg.has_ack:
        return Segment(seg.ack, 0, RST, 0)
    return Segment(0, seq_add(seg.seq, seg.length), RST | ACK, 0)


class FlowTable:
    def __init__(self, *, max_flows: int, max_half_open: int) -> None:
        self.max_flows = max_flows
        self.max_half_open = max_half_open
        self.tcp: dict[FlowKey, TcpFlow] = {}
        self.udp: dict[FlowKey, UdpFlow] = {}
        self.half_open: set[FlowKey] = set()
        self.dropped: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.tcp) + len(self.udp)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def tcp_admit(self, key: FlowKey, seg: Segment) -> Refuse | Ignore | None:
        """What to do with seg, which belongs to no flow (the caller looked `key` up in
        `tcp` first); None: seg may start a new flow."""
        if seg.rst:
            self.drop("tcp-rst-no-flow")  # RFC 9293 §3.10.7.1: a RST to CLOSED is dropped
            return Ignore("tcp-rst-no-flow")
        if not seg.syn or seg.has_ack:
            self.reject("tcp-no-flow")
            return Refuse(reset_for(seg), "tcp-no-flow")
        if len(self.half_open) >= self.max_half_open:
            self.drop("tcp-syn-flood")  # the app's stack retries the SYN later
            return Ignore("tcp-syn-flood")
        if len(self) >= self.max_flows:
            self.reject("tcp-table-full")
            return Refuse(reset_for(seg), "tcp-table-full")
        return None

    def add_tcp(
        self, key: FlowKey, syn: Segment, iss: int, settings: TcpSettings, now: float
    ) -> TcpFlow:
        flow = TcpFlow(syn, iss, settings, now)
        self.tcp[key] = flow
        self.half_open.add(key)
        self.opened["tcp"] += 1
        return flow

    def settle_tcp(self, key: FlowKey) -> None:
        """Call after driving a flow: keeps the half-open set and removes closed flows."""
        flow = self.tcp.get(key)
        if flow is None:
            return
        if flow.state not in _HALF_OPEN:
            self.half_open.discard(key)
        if flow.state is TcpState.CLOSED:
            del self.tcp[key]

    def udp_admit(self, key: FlowKey) -> UdpFlow | Ignore | None:
        flow = self.udp.get(key)
        if flow is not None:
            return flow
        if len(self) >= self.max_flows:
            self.drop("udp-table-full")
            return Ignore("udp-table-full")
        return None

    def add_udp(self, key: FlowKey, flow: UdpFlow) -> None:
        self.udp[key] = flow
        self.opened["udp"] += 1

    def remove_udp(self, key: FlowKey) -> None:
        self.udp.pop(key, None)

    def stats(self) -> dict[str, object]:
        return {
            "tcp_flows": len(self.tcp),
            "udp_flows": len(self.udp),
            "half_open": len(self.half_open),
            "opened": dict(self.opened),
            "dropped": dict(self.dropped),
            "rejected": dict(self.rejected),
        }
