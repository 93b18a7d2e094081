"""Scripted event → action tests for the TUN TCP endpoint (RFC 9293 states by name)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.errors import LocalProtocolError
from proxy64.flow.segment import ACK, FIN, PSH, RST, SYN, Segment, seq_add
from proxy64.flow.tcp_flow import (
    AckLater,
    Action,
    Closed,
    Dial,
    DialFailed,
    DialSucceeded,
    Drop,
    Readable,
    Refusal,
    Reject,
    SegmentArrived,
    TcpFlow,
    TcpSettings,
    TcpState,
    Tick,
    Transmit,
    Writable,
)

ISS = 1000
IRS = 5000
SETTINGS = TcpSettings(mss=1000, rx_capacity=4000, tx_capacity=3000, max_retries=3)


def sent(actions: list[Action]) -> list[Segment]:
    return [a.segment for a in actions if isinstance(a, Transmit)]


def state(flow: TcpFlow) -> TcpState:
    """The flow's state read afresh: mypy narrows `flow.state` after one assertion and does not
    know that `handle`, `send_eof` or `close` move it on."""
    return flow.state


def syn(**kw: int) -> Segment:
    return Segment(
        IRS, 0, SYN, kw.get("window", 64000), mss=kw.get("mss", 1460), wscale=kw.get("wscale")
    )


def established(settings: TcpSettings = SETTINGS, window: int = 64000) -> TcpFlow:
    flow = TcpFlow(syn(window=window), ISS, settings, now=0.0)
    assert flow.start() == [Dial()]
    flow.handle(DialSucceeded(), 0.0)
    flow.handle(SegmentArrived(Segment(IRS + 1, ISS + 1, ACK, window)), 0.0)
    assert state(flow) is TcpState.ESTABLISHED
    return flow


def app(
    seq: int, flags: int = ACK, payload: bytes = b"", ack: int = ISS + 1, window: int = 64000
) -> SegmentArrived:
    return SegmentArrived(Segment(seq, ack, flags, window, payload))


def test_rfc9293_syn_is_held_until_dial_then_syn_ack() -> None:
    flow = TcpFlow(syn(wscale=7), ISS, SETTINGS, now=0.0)
    assert state(flow) is TcpState.LISTEN
    assert flow.start() == [Dial()]
    # A retransmitted SYN while dialing changes nothing.
    assert flow.handle(SegmentArrived(syn(wscale=7)), 0.5) == []
    actions = flow.handle(DialSucceeded(), 1.0)
    (synack,) = sent(actions)
    assert synack.flags == SYN | ACK
    assert synack.seq == ISS and synack.ack == IRS + 1
    assert synack.mss == SETTINGS.mss and synack.wscale is not None
    assert state(flow) is TcpState.SYN_RECEIVED
    actions = flow.handle(app(IRS + 1), 1.0)
    assert state(flow) is TcpState.ESTABLISHED
    assert Writable() in actions


def test_refused_dial_answers_rst_for_the_syn() -> None:
    flow = TcpFlow(syn(), ISS, SETTINGS, now=0.0)
    flow.start()
    actions = flow.handle(DialFailed(Refusal.RESET, "connection refused"), 0.1)
    (rst,) = sent(actions)
    assert rst.flags == RST | ACK and rst.ack == IRS + 1 and rst.seq == 0
    assert state(flow) is TcpState.CLOSED
    assert Closed("connection refused", True) in actions


def test_unreachable_dial_answers_icmp_not_rst() -> None:
    flow = TcpFlow(syn(), ISS, SETTINGS, now=0.0)
    flow.start()
    actions = flow.handle(DialFailed(Refusal.NO_ROUTE, "network unreachable"), 0.1)
    assert sent(actions) == []
    assert Reject(Refusal.NO_ROUTE) in actions
    assert state(flow) is TcpState.CLOSED


def test_syn_ack_retransmitted_on_timeout_with_backoff() -> None:
    flow = TcpFlow(syn(), ISS, SETTINGS, now=0.0)
    flow.start()
    flow.handle(DialSucceeded(), 0.0)
    assert flow.deadline == 1.0
    assert flow.handle(Tick(), 0.5) == []
    (again,) = sent(flow.handle(Tick(), 1.0))
    assert again.flags == SYN | ACK
    assert flow.deadline == 3.0  # RFC 6298 §5.5: RTO doubled


def test_data_from_app_is_buffered_acked_and_window_shrinks() -> None:
    flow = established()
    actions = flow.handle(app(IRS + 1, PSH | ACK, b"x" * 1500), 0.1)
    assert Readable() in actions
    assert AckLater() in actions and sent(actions) == []  # one ACK per batch
    assert flow.handle(app(IRS + 1501, PSH | ACK, b"y" * 10), 0.1) == [Readable()]
    (ack,) = sent(flow.flush_ack())
    assert flow.flush_ack() == []
    data, _ = flow.receive(100_000, 0.2)
    assert data == b"x" * 1500 + b"y" * 10
    assert ack.ack == IRS + 1 + 1510
    assert ack.window == SETTINGS.rx_capacity - 1510


def test_pending_ack_rides_on_data_we_send() -> None:
    flow = established()
    flow.handle(app(IRS + 1, PSH | ACK, b"question"), 0.1)
    _, actions = flow.send(b"answer", 0.1)
    (data,) = sent(actions)
    assert data.ack == IRS + 9 and data.payload == b"answer"
    assert flow.flush_ack() == []  # the data segment carried the ACK


def test_data_ack_old_form() -> None:
    flow = established()
    flow.handle(app(IRS + 1, PSH | ACK, b"x" * 1500), 0.1)
    (ack,) = sent(flow.flush_ack())
    assert ack.ack == IRS + 1 + 1500
    assert ack.window == SETTINGS.rx_capacity - 1500
    data, _ = flow.receive(100_000, 0.2)
    assert data == b"x" * 1500


def test_receive_window_full_drops_excess_and_reopens_with_update() -> None:
    flow = established()
    flow.handle(app(IRS + 1, ACK, b"a" * 4000), 0.1)
    actions = flow.handle(app(IRS + 4001, ACK, b"b" * 10), 0.2)
    assert Drop("tcp-beyond-window") in actions
    (ack,) = sent(actions)
    assert ack.window == 0 and ack.ack == IRS + 4001
    data, actions = flow.receive(4000, 0.3)
    assert len(data) == 4000
    (update,) = sent(actions)
    assert update.window == 4000


def test_out_of_order_is_dropped_with_duplicate_ack() -> None:
    flow = established()
    actions = flow.handle(app(IRS + 101, ACK, b"later"), 0.1)
    (dup,) = sent(actions)
    assert dup.ack == IRS + 1
    assert Drop("tcp-out-of-order") in actions
    assert flow.receive(100, 0.1)[0] == b""


def test_overlapping_retransmission_is_trimmed() -> None:
    flow = established()
    flow.handle(app(IRS + 1, ACK, b"hello"), 0.1)
    flow.handle(app(IRS + 1, ACK, b"hello world"), 0.2)
    assert flow.receive(100, 0.3)[0] == b"hello world"


def test_send_respects_app_mss_and_window() -> None:
    flow = established(window=2500)
    accepted, actions = flow.send(b"z" * 5000, 0.1)
    assert accepted == SETTINGS.tx_capacity  # bounded buffer
    segs = sent(actions)
    assert [len(s.payload) for s in segs] == [1000, 1000, 500]  # 2500-byte window
    assert segs[0].seq == ISS + 1 and segs[1].seq == ISS + 1001
    assert flow.send_space == 0
    actions = flow.handle(app(IRS + 1, ack=ISS + 1 + 2500, window=2500), 0.2)
    assert Writable() in actions
    assert [len(s.payload) for s in sent(actions)] == [500]
    assert flow.send_space == 2500


def test_window_scaling_from_syn_applies_after_handshake() -> None:
    flow = TcpFlow(syn(window=100, wscale=4), ISS, SETTINGS, now=0.0)
    flow.start()
    flow.handle(DialSucceeded(), 0.0)
    flow.handle(app(IRS + 1, window=100), 0.0)
    assert flow.snd_wnd == 1600


def test_retransmit_on_timeout_go_back_n_then_gives_up_with_rst() -> None:
    flow = established()
    flow.send(b"d" * 2000, 0.0)
    assert flow.deadline == 1.0
    again = sent(flow.handle(Tick(), 1.0))
    assert [s.seq for s in again] == [ISS + 1]  # one segment after a timeout
    assert flow.deadline == 3.0
    flow.handle(Tick(), 3.0)
    flow.handle(Tick(), 7.0)
    actions = flow.handle(Tick(), 15.0)
    assert sent(actions)[-1].flags & RST
    assert state(flow) is TcpState.CLOSED
    assert any(isinstance(a, Closed) and a.reset for a in actions)


def test_three_duplicate_acks_fast_retransmit() -> None:
    flow = established()
    flow.send(b"q" * 3000, 0.0)
    assert sent(flow.handle(app(IRS + 1), 0.1)) == []
    assert sent(flow.handle(app(IRS + 1), 0.1)) == []
    (fast,) = sent(flow.handle(app(IRS + 1), 0.1))
    assert fast.seq == ISS + 1 and len(fast.payload) == 1000


def test_zero_window_probe() -> None:
    flow = established(window=0)
    accepted, actions = flow.send(b"p" * 10, 0.0)
    assert accepted == 10 and sent(actions) == []
    (probe,) = sent(flow.handle(Tick(), 1.0))
    assert probe.payload == b"p"


def test_fin_from_app_then_fin_from_us_closes_cleanly() -> None:
    flow = established()
    actions = flow.handle(app(IRS + 1, FIN | ACK), 0.1)
    assert state(flow) is TcpState.CLOSE_WAIT and flow.rx_eof
    assert sent(actions)[0].ack == IRS + 2
    flow.send(b"bye", 0.2)
    actions = flow.send_eof(0.2)
    (fin,) = sent(actions)
    assert fin.flags & FIN and fin.seq == ISS + 4
    assert state(flow) is TcpState.LAST_ACK
    actions = flow.handle(app(IRS + 2, ack=ISS + 5), 0.3)
    assert state(flow) is TcpState.CLOSED
    assert Closed("finished", False) in actions


def test_fin_from_us_first_half_close_then_app_keeps_sending() -> None:
    flow = established()
    flow.send_eof(0.0)
    assert state(flow) is TcpState.FIN_WAIT_1
    flow.handle(app(IRS + 1, ack=ISS + 2), 0.1)
    assert state(flow) is TcpState.FIN_WAIT_2
    flow.handle(app(IRS + 1, ACK, b"more", ack=ISS + 2), 0.2)
    assert flow.receive(10, 0.2)[0] == b"more"
    actions = flow.handle(app(IRS + 5, FIN | ACK, ack=ISS + 2), 0.3)
    assert Closed("finished", False) in actions
    assert flow.rx_eof


def test_simultaneous_close_goes_through_closing() -> None:
    flow = established()
    flow.send_eof(0.0)
    flow.handle(app(IRS + 1, FIN | ACK, ack=ISS + 1), 0.1)
    assert state(flow) is TcpState.CLOSING
    actions = flow.handle(app(IRS + 2, ack=ISS + 2), 0.2)
    assert Closed("finished", False) in actions


def test_rfc5961_rst_exact_resets_in_window_challenges() -> None:
    flow = established()
    actions = flow.handle(app(IRS + 10, RST), 0.1)
    assert Drop("tcp-rst-challenged") in actions
    assert state(flow) is TcpState.ESTABLISHED
    actions = flow.handle(app(IRS + 1, RST), 0.2)
    assert state(flow) is TcpState.CLOSED and flow.reset_reason == "reset by the app"


def test_rfc5961_syn_in_established_gets_challenge_ack() -> None:
    flow = established()
    actions = flow.handle(SegmentArrived(Segment(IRS + 77, 0, SYN, 1000)), 0.1)
    (ack,) = sent(actions)
    assert ack.flags == ACK and ack.ack == IRS + 1
    assert state(flow) is TcpState.ESTABLISHED


def test_close_with_unread_data_resets() -> None:
    flow = established()
    flow.handle(app(IRS + 1, ACK, b"unread"), 0.1)
    actions = flow.close(0.2)
    assert sent(actions)[0].flags & RST


def test_close_after_eof_is_graceful_fin() -> None:
    flow = established()
    flow.handle(app(IRS + 1, FIN | ACK), 0.1)
    (fin,) = sent(flow.close(0.2))
    assert fin.flags & FIN and not fin.flags & RST


def test_send_after_eof_is_a_local_error() -> None:
    flow = established()
    flow.send_eof(0.0)
    try:
        flow.send(b"x", 0.1)
    except LocalProtocolError as exc:
        assert "send()" in str(exc)
    else:
        raise AssertionError("send after EOF must raise")


def test_sequence_numbers_wrap_modulo_2_32() -> None:
    flow = TcpFlow(Segment(0xFFFFFFF0, 0, SYN, 64000, mss=1000), 0xFFFFFFFF, SETTINGS, 0.0)
    flow.start()
    flow.handle(DialSucceeded(), 0.0)
    flow.handle(SegmentArrived(Segment(0xFFFFFFF1, 0, ACK, 64000)), 0.0)
    assert state(flow) is TcpState.ESTABLISHED
    flow.handle(SegmentArrived(Segment(0xFFFFFFF1, 0, ACK, 64000, b"w" * 100)), 0.1)
    assert flow.rcv_nxt == seq_add(0xFFFFFFF1, 100)
    assert flow.receive(200, 0.1)[0] == b"w" * 100


segments = st.builds(
    Segment,
    seq=st.integers(0, 0xFFFFFFFF),
    ack=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0x3F),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=64),
    mss=st.none() | st.integers(1, 0xFFFF),
    wscale=st.none() | st.integers(0, 255),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(segments, st.booleans()), max_size=25), st.booleans())
def test_random_segments_never_raise(script: list[tuple[Segment, bool]], dial_ok: bool) -> None:
    flow = TcpFlow(syn(wscale=2), ISS, SETTINGS, now=0.0)
    flow.start()
    flow.handle(DialSucceeded() if dial_ok else DialFailed(Refusal.RESET, "x"), 0.0)
    now = 0.0
    for seg, tick in script:
        now += 0.5
        flow.handle(SegmentArrived(seg), now)
        if tick:
            flow.handle(Tick(), now)
        if flow.can_send:
            flow.send(b"r" * 100, now)
        flow.receive(50, now)
        assert len(flow.rx) <= SETTINGS.rx_capacity
        assert len(flow.tx) <= SETTINGS.tx_capacity


def test_fin_wait_2_after_close_times_out_with_rst() -> None:
    flow = established()
    flow.close(1.0)  # the relay is done: FIN to the app
    assert state(flow) is TcpState.FIN_WAIT_1
    flow.handle(app(IRS + 1, ack=ISS + 2), 1.1)
    assert state(flow) is TcpState.FIN_WAIT_2
    assert flow.deadline == 1.1 + 60.0
    assert flow.handle(Tick(), 30.0) == []
    actions = flow.handle(Tick(), 61.1)
    assert sent(actions)[0].flags & RST
    assert state(flow) is TcpState.CLOSED


def test_tso_sends_super_segments_of_whole_mss() -> None:
    settings = TcpSettings(mss=1000, rx_capacity=4000, tx_capacity=200_000, max_retries=3,
                           tso=True)  # fmt: skip
    flow = TcpFlow(syn(window=65535, wscale=4), ISS, settings, now=0.0)
    flow.start()
    flow.handle(DialSucceeded(), 0.0)
    flow.handle(app(IRS + 1, window=65535), 0.0)  # window 65535 << 4 ≈ 1 MiB
    _, actions = flow.send(b"g" * 150_000, 0.1)
    sizes = [len(s.payload) for s in sent(actions)]
    assert sizes == [65000, 65000, 20000]  # 65 MSS per super-segment, the rest after
    assert all(size % 1000 == 0 for size in sizes)


def test_send_more_holds_the_partial_tail_until_the_next_send() -> None:
    flow = established()  # app MSS 1460 > ours: snd_mss 1000
    (full,) = sent(flow.send(b"a" * 1300, 1.0, more=True)[1])
    assert len(full.payload) == 1000  # the 300-byte tail is held (corked)
    segments = sent(flow.send(b"b" * 700, 1.0, more=True)[1])
    assert [len(s.payload) for s in segments] == [1000]  # tail + new data: one full segment
    assert segments[0].payload == b"a" * 300 + b"b" * 700
    assert segments[0].seq == ISS + 1 + 1000
    assert sent(flow.push(1.0)) == []  # nothing left held


def test_push_sends_the_held_tail() -> None:
    flow = established()
    flow.send(b"x" * 1300, 1.0, more=True)
    (tail,) = sent(flow.push(1.0))
    assert tail.payload == b"x" * 300 and tail.seq == ISS + 1 + 1000
    # once pushed, an ACK-driven output is not corked any more
    flow.send(b"y" * 10, 1.0)
    assert flow.corked is False


def test_send_eof_sends_the_held_tail_before_fin() -> None:
    flow = established()
    flow.send(b"z" * 1300, 1.0, more=True)
    segments = sent(flow.send_eof(1.0))
    assert [(len(s.payload), bool(s.flags & FIN)) for s in segments] == [(300, False), (0, True)]


def test_corked_flow_still_sends_what_the_window_allows() -> None:
    flow = established(window=500)  # less than one segment: the window decides, not the cork
    (seg,) = sent(flow.send(b"w" * 800, 1.0, more=True)[1])
    assert len(seg.payload) == 500


def test_rfc9293_3_8_6_2_2_window_update_only_while_the_app_is_window_limited() -> None:
    """Reading reopens the window; an update is sent only when the app has less than half
    the buffer left to send under the last advertised window (Linux-like), not per read."""
    settings = TcpSettings(mss=1000, rx_capacity=8000, tx_capacity=3000, max_retries=3)
    flow = established(settings)
    flow.handle(app(IRS + 1, payload=b"x" * 1000), 0.1)
    (ack,) = sent(flow.flush_ack())
    assert ack.window == 7000  # the app may still send 7000 > 8000 / 2
    data, actions = flow.receive(1000, 0.2)
    assert bytes(data) == b"x" * 1000 and sent(actions) == []  # no update: not limited
    flow.handle(app(IRS + 1001, payload=b"y" * 3500), 0.3)  # 3500 left of the 7000
    flow.handle(app(IRS + 4501, payload=b"z" * 1000), 0.3)  # 2500 left: limited now
    data, actions = flow.receive(4500, 0.4)
    assert bytes(data) == b"y" * 3500 + b"z" * 1000
    (update,) = sent(actions)
    assert update.ack == IRS + 5501 and update.window == 8000  # reopened at once
