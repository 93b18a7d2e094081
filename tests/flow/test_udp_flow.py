"""The UDP flow record: queue while opening, deliver, idle close, unreachable."""

from __future__ import annotations

from proxy64.flow.udp_flow import (
    Deliver,
    Open,
    SendOut,
    UdpClosed,
    UdpDrop,
    UdpFlow,
    UdpState,
    Unreachable,
)


def test_first_datagram_opens_then_queue_flushes_in_order() -> None:
    flow = UdpFlow(0.0, idle=60, queue_limit=2)
    assert flow.start(b"one") == [Open()]
    assert flow.from_app(b"two", 0.1) == []
    assert flow.from_app(b"three", 0.1) == [UdpDrop("udp-queue-full")]
    assert flow.opened(0.2) == [SendOut(b"one"), SendOut(b"two")]
    assert flow.from_app(b"four", 0.3) == [SendOut(b"four")]
    assert flow.from_remote(b"answer", 0.4) == [Deliver(b"answer")]
    assert (flow.datagrams_out, flow.datagrams_in, flow.bytes_in) == (3, 1, 6)


def test_idle_timeout_closes() -> None:
    flow = UdpFlow(0.0, idle=60, queue_limit=2)
    flow.start(b"x")
    flow.opened(0.0)
    assert flow.tick(59.0) == []
    flow.from_remote(b"keepalive", 30.0)
    assert flow.tick(89.0) == []
    assert flow.tick(90.0) == [UdpClosed("idle for 60 s")]
    assert flow.state is UdpState.CLOSED
    assert flow.from_app(b"late", 91.0) == [UdpDrop("udp-closed-flow")]


def test_failed_open_answers_unreachable_once() -> None:
    flow = UdpFlow(0.0, idle=60, queue_limit=2)
    flow.start(b"x")
    assert flow.failed("no route") == [Unreachable("no route"), UdpClosed("no route")]
    assert flow.failed("again") == []
    assert flow.from_remote(b"r", 1.0) == [UdpDrop("udp-reply-after-close")]
