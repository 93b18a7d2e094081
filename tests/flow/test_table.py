"""The bounded flow table: admission, SYN flood bound, RFC 9293 §3.10.7.1 resets, counters."""

from __future__ import annotations

from ipaddress import IPv6Address

from proxy64.flow.segment import ACK, RST, SYN, Segment
from proxy64.flow.table import FlowTable, Ignore, Refuse
from proxy64.flow.tcp_flow import DialFailed, DialSucceeded, Refusal, TcpSettings
from proxy64.flow.wire import TCP, UDP, FlowKey

SETTINGS = TcpSettings(mss=1000, rx_capacity=4000, tx_capacity=4000, max_retries=3)
SYN_SEG = Segment(100, 0, SYN, 1000, mss=1000)


def key(n: int, proto: int = TCP) -> FlowKey:
    return FlowKey(proto, (IPv6Address("fd64::2"), 40000 + n), (IPv6Address("2001:db8::1"), 80))


def test_rfc9293_3_10_7_1_reset_for_segment_to_unknown_flow() -> None:
    table = FlowTable(max_flows=10, max_half_open=10)
    verdict = table.tcp_admit(key(1), Segment(5, 777, ACK, 100, b"abc"))
    assert verdict == Refuse(Segment(777, 0, RST, 0), "tcp-no-flow")
    verdict = table.tcp_admit(key(1), Segment(5, 0, 0, 100, b"abc"))
    assert isinstance(verdict, Refuse) and verdict.reset == Segment(0, 8, RST | ACK, 0)
    assert table.rejected["tcp-no-flow"] == 2


def test_rst_to_unknown_flow_is_dropped_silently() -> None:
    table = FlowTable(max_flows=10, max_half_open=10)
    assert table.tcp_admit(key(1), Segment(5, 0, RST, 0)) == Ignore("tcp-rst-no-flow")
    assert table.dropped["tcp-rst-no-flow"] == 1 and not table.rejected


def test_syn_flood_is_bounded_by_half_open_limit() -> None:
    table = FlowTable(max_flows=100, max_half_open=3)
    for n in range(3):
        assert table.tcp_admit(key(n), SYN_SEG) is None
        table.add_tcp(key(n), SYN_SEG, 1, SETTINGS, 0.0)
    assert table.tcp_admit(key(9), SYN_SEG) == Ignore("tcp-syn-flood")
    assert table.dropped["tcp-syn-flood"] == 1
    # A finished handshake frees a half-open slot.
    flow = table.tcp[key(0)]
    flow.handle(DialSucceeded(), 0.0)
    from proxy64.flow.tcp_flow import SegmentArrived

    flow.handle(SegmentArrived(Segment(101, flow.iss + 1, ACK, 1000)), 0.0)
    table.settle_tcp(key(0))
    assert table.tcp_admit(key(9), SYN_SEG) is None


def test_table_full_rejects_with_rst_and_closed_flows_leave() -> None:
    table = FlowTable(max_flows=2, max_half_open=10)
    table.add_tcp(key(1), SYN_SEG, 1, SETTINGS, 0.0)
    table.add_tcp(key(2), SYN_SEG, 1, SETTINGS, 0.0)
    verdict = table.tcp_admit(key(3), SYN_SEG)
    assert isinstance(verdict, Refuse) and verdict.reason == "tcp-table-full"
    table.tcp[key(1)].handle(DialFailed(Refusal.RESET, "refused"), 0.0)
    table.settle_tcp(key(1))
    assert key(1) not in table.tcp and key(1) not in table.half_open
    assert table.tcp_admit(key(3), SYN_SEG) is None


def test_udp_admission_bounded() -> None:
    from proxy64.flow.udp_flow import UdpFlow

    table = FlowTable(max_flows=1, max_half_open=1)
    assert table.udp_admit(key(1, UDP)) is None
    table.add_udp(key(1, UDP), UdpFlow(0.0, idle=1, queue_limit=1))
    assert table.udp_admit(key(2, UDP)) == Ignore("udp-table-full")
    assert table.stats()["dropped"] == {"udp-table-full": 1}
