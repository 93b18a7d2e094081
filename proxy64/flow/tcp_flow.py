"""One TCP connection from the app, terminated by proxy64: a sans-I/O TCP endpoint.

`handle(event, now) -> actions`; the stream side calls send()/receive()/send_eof()/
abort(), which also return actions. Nothing here reads a clock: `now` is passed in and
`deadline` says when the caller must deliver a Tick.

Invariants:
- the SYN is held in LISTEN until the destination is dialed (dial first, then SYN-ACK);
  a refusal becomes RST, anything else an ICMP unreachable (the stack builds it);
- buffers are bounded both ways: the advertised window is the free space of the receive
  buffer (it shrinks when the outbound side is slow), send() accepts only what fits;
- the app's receive window (scaled, RFC 7323 §2.3) and MSS (RFC 9293 §3.7.1) bound what
  is sent; retransmission after RTO with exponential backoff (RFC 6298 §5), go-back-N,
  fast retransmit on three duplicate ACKs (RFC 5681 §3.2);
- out-of-order segments are dropped and answered with a duplicate ACK (documented
  deviation: no reassembly queue, no SACK);
- RST and SYN in synchronized states follow RFC 5961 §3.2/§4 (challenge ACK);
- TIME-WAIT is skipped (the flow goes CLOSED at once; proxy64 never reuses the app's
  4-tuple, the app's own stack keeps its TIME-WAIT).
"""

from __future__ import annotations

from proxy64.defaults import (
    TUN_TCP_FIN_TIMEOUT,
    TUN_TCP_RTO_MAX,
)
from proxy64.errors import LocalProtocolError
from proxy64.flow.segment import (
    ACK,
    RST,
    Segment,
    seq_add,
    seq_diff,
    seq_le,
    seq_lt,
)
from proxy64.flow.tcp_events import (  # re-exported: the machine's vocabulary
    RECEIVES_DATA,
    SENDS_DATA,
    SYNCHRONIZED,
    AckLater,
    Action,
    Closed,
    Dial,
    DialFailed,
    DialSucceeded,
    Drop,
    Event,
    PathMtu,
    Readable,
    Refusal,
    Reject,
    SegmentArrived,
    TcpState,
    Tick,
    Transmit,
    Writable,
)
from proxy64.flow.tcp_output import (
    DEFAULT_MSS,
    DUPACK_THRESHOLD,
    TcpEndpoint,
    TcpSettings,
)

# The reset_reason when the app sent RST (the relay passes it on as an RST to the origin).
RESET_BY_APP = "reset by the app"

__all__ = [
    "DEFAULT_MSS",
    "RESET_BY_APP",
    "SYNCHRONIZED",
    "AckLater",
    "Action",
    "Closed",
    "Dial",
    "DialFailed",
    "DialSucceeded",
    "Drop",
    "Event",
    "PathMtu",
    "Readable",
    "Refusal",
    "Reject",
    "SegmentArrived",
    "TcpFlow",
    "TcpSettings",
    "TcpState",
    "Tick",
    "Transmit",
    "Writable",
]


class TcpFlow(TcpEndpoint):
    """One app connection. Create it with the app's SYN: TcpFlow(syn, iss, settings, now)."""

    def start(self) -> list[Action]:
        return [Dial()]

    def handle(self, event: Event, now: float) -> list[Action]:
        actions: list[Action] = []
        if isinstance(event, SegmentArrived):
            self._on_segment(event.segment, now, actions)
        elif isinstance(event, DialSucceeded):
            self._on_dialed(now, actions)
        elif isinstance(event, DialFailed):
            self._on_dial_failed(event, actions)
        elif isinstance(event, Tick):
            if self.rto_deadline is not None and now >= self.rto_deadline:
                self._on_timeout(now, actions)
            if self.linger_deadline is not None and now >= self.linger_deadline:
                actions.extend(self.abort("no FIN from the app after the stream was closed"))
        else:
            self.snd_mss = max(DEFAULT_MSS // 2, min(self.snd_mss, event.mss))
        return actions

    def flush_ack(self) -> list[Action]:
        """The ACK delayed by AckLater, unless a segment sent since already carried it."""
        actions: list[Action] = []
        if self.ack_pending and self.state is not TcpState.CLOSED:
            self._send_ack(actions)
        self.ack_pending = False
        return actions

    def send(
        self, data: bytes | bytearray | memoryview, now: float, *, more: bool = False
    ) -> tuple[int, list[Action]]:
        """Queue bytes for the app; returns how many fit (0 when the buffer is full).

        more: more data is probably coming (MSG_MORE): hold a partial last segment until
        the next send or push(), so bulk data goes out in full segments."""
        self.corked = more
        if not self.can_send:
            raise LocalProtocolError(f"send() in state {self.state.value} after EOF or reset")
        n = min(len(data), self.send_space)
        self.tx.append(data if n == len(data) else data[:n])
        actions: list[Action] = []
        self._output(now, actions)
        return n, actions

    def push(self, now: float) -> list[Action]:
        """Send what send(more=True) held back (the end of a burst)."""
        self.corked = False
        actions: list[Action] = []
        self._output(now, actions)
        return actions

    def send_eof(self, now: float) -> list[Action]:
        """Half-close toward the app: FIN after the queued data (RFC 9293 §3.6)."""
        actions: list[Action] = []
        if self.state in SENDS_DATA and not self.tx_eof:
            self.tx_eof = True
            self._output(now, actions)
        return actions

    def receive(self, max_bytes: int, now: float) -> tuple[bytes | memoryview, list[Action]]:
        """Take up to max_bytes for the destination; reopens the window (RFC 9293 §3.8.6.2.2)."""
        data = self.rx.take(max_bytes)
        actions: list[Action] = []
        if data and self.state in RECEIVES_DATA:
            capacity = self.settings.rx_capacity
            # What the app may still send under the window we last advertised.
            remaining = seq_diff(self.adv_edge, self.rcv_nxt)
            if remaining > capacity:
                remaining = 0  # the edge is behind rcv_nxt (cannot happen; be safe)
            # Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): update when the window grew by
            # min(buffer/2, MSS); and, like Linux, only while the app has less than half the
            # buffer left to send: above that it is not window-limited, and the ACK of its
            # next batch carries the new window (one ACK per 64 KiB read cost the app's
            # kernel an ACK to process, inside our writev).
            if remaining < capacity // 2 and (
                self._free_window() - remaining >= min(capacity // 2, self.settings.mss)
            ):
                self._send_ack(actions)
        return data, actions

    def close(self, now: float) -> list[Action]:
        """The stream side is done: FIN after queued data, or RST when the app's data is
        still unread (what close(2) does with unread data, RFC 9293 §3.10.4 ABORT)."""
        if self.state is TcpState.CLOSED:
            return []
        if self.rx or self.state in (TcpState.LISTEN, TcpState.SYN_RECEIVED):
            return self.abort("closed with unread data")
        self.detached = True
        if self.state is TcpState.FIN_WAIT_2:
            self.linger_deadline = now + TUN_TCP_FIN_TIMEOUT
        return self.send_eof(now)

    def abort(self, reason: str) -> list[Action]:
        """RFC 9293 §3.10.4 ABORT: RST to the app if synchronized, then CLOSED."""
        actions: list[Action] = []
        if self.state is TcpState.CLOSED:
            return actions
        if self.state is not TcpState.LISTEN:
            actions.append(Transmit(self._make(RST | ACK, self.snd_nxt)))
        self._close(reason, actions, reset=True)
        return actions

    # --- events ------------------------------------------------------------------------
    def _on_dialed(self, now: float, actions: list[Action]) -> None:
        if self.state is not TcpState.LISTEN:
            return  # the app reset the flow while we dialed
        self.state = TcpState.SYN_RECEIVED
        self.snd_nxt = seq_add(self.iss, 1)
        self._transmit_syn_ack(actions)
        self._arm(now)

    def _on_dial_failed(self, event: DialFailed, actions: list[Action]) -> None:
        if self.state is not TcpState.LISTEN:
            return
        if event.refusal is Refusal.RESET:
            # RFC 9293 §3.10.7.1: a reset for a SYN carries SEQ=0, ACK=SEG.SEQ+SEG.LEN.
            actions.append(Transmit(Segment(0, self.rcv_nxt, RST | ACK, 0)))
        else:
            actions.append(Reject(event.refusal))
        self._close(event.reason, actions, reset=True)

    def _on_segment(self, seg: Segment, now: float, actions: list[Action]) -> None:
        state = self.state
        if state is TcpState.CLOSED:
            actions.append(Drop("tcp-closed-flow"))
            return
        if state is TcpState.LISTEN:
            if seg.rst:
                self._close("reset by the app before the dial finished", actions, reset=True)
            elif not (seg.syn and seg.seq == self.irs):
                actions.append(Drop("tcp-dial-pending"))
            return  # a retransmitted SYN: the dial is still running
        if seg.rst:
            self._on_rst(seg, actions)
            return
        if seg.syn:
            if state is TcpState.SYN_RECEIVED and seg.seq == self.irs and not seg.has_ack:
                self._transmit_syn_ack(actions)  # our SYN-ACK was lost
                return
            # RFC 5961 §4: a SYN on a synchronized connection gets a challenge ACK.
            self._send_ack(actions)
            actions.append(Drop("tcp-syn-in-window"))
            return
        if not seg.has_ack:
            actions.append(Drop("tcp-no-ack"))  # RFC 9293 §3.10.7.4 fifth check
            return
        if state is TcpState.SYN_RECEIVED:
            if seg.ack != seq_add(self.iss, 1):
                # RFC 9293 §3.10.7.4: unacceptable ACK in SYN-RECEIVED → <SEQ=SEG.ACK><RST>
                actions.append(Transmit(Segment(seg.ack, 0, RST, 0)))
                actions.append(Drop("tcp-bad-ack"))
                return
            self.state = TcpState.ESTABLISHED
            self.snd_una = self.snd_nxt
            self.snd_wnd = seg.window << self.snd_wscale
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.rto_deadline = None
            self.retries = 0
            actions.append(Writable())
        if not self._on_ack(seg, now, actions):
            return
        if seg.payload or seg.fin:
            self._on_data(seg, actions)
        if self.detached and self.rx:
            actions.extend(self.abort("data arrived after the stream was closed"))
            return
        self._output(now, actions)
        self._maybe_finished(actions)

    def _on_rst(self, seg: Segment, actions: list[Action]) -> None:
        # RFC 5961 §3.2: exact match resets, in-window gets a challenge ACK, else drop.
        if seg.seq == self.rcv_nxt:
            self._close(RESET_BY_APP, actions, reset=True)
        elif seq_lt(self.rcv_nxt, seg.seq) and seq_lt(
            seg.seq, seq_add(self.rcv_nxt, max(1, self._free_window()))
        ):
            self._send_ack(actions)
            actions.append(Drop("tcp-rst-challenged"))
        else:
            actions.append(Drop("tcp-rst-out-of-window"))

    def _on_ack(self, seg: Segment, now: float, actions: list[Action]) -> bool:
        ack = seg.ack
        if seq_lt(self.snd_nxt, ack):
            self._send_ack(actions)  # RFC 9293 §3.10.7.4: ACKs something not yet sent
            actions.append(Drop("tcp-ack-unsent"))
            return False
        if seq_lt(self.snd_una, ack):
            acked = seq_diff(ack, self.snd_una)
            data_acked = min(acked, self.tx_sent)
            self.tx.drop(data_acked)
            self.tx_sent -= data_acked
            if self.fin_sent and acked > data_acked:
                self.fin_acked = True
            self.snd_una = ack
            self.dupacks = 0
            self.retries = 0
            if self.rtt_seq is not None and seq_le(self.rtt_seq, ack):
                self._rtt_sample(now - self.rtt_start)
                self.rtt_seq = None
            if self.cwnd < (1 << 62):
                self.cwnd += self.snd_mss  # slow start after a timeout (RFC 5681 §3.1)
            self.rto_deadline = now + self.rto if self._in_flight() else None
            if data_acked:
                actions.append(Writable())
        elif (
            ack == self.snd_una
            and self._in_flight()
            and not seg.payload
            and not seg.fin
            and (seg.window << self.snd_wscale) == self.snd_wnd
        ):
            self.dupacks += 1
            if self.dupacks == DUPACK_THRESHOLD:
                self._retransmit_first(actions)
        # RFC 9293 §3.10.7.4: update the send window from the newest segment only.
        if seq_lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, ack)):
            self.snd_wnd = seg.window << self.snd_wscale
            self.snd_wl1, self.snd_wl2 = seg.seq, ack
        if self.fin_acked:
            if self.state is TcpState.FIN_WAIT_1:
                self.state = TcpState.FIN_WAIT_2
                if self.detached:  # like Linux tcp_fin_timeout: nobody reads any more
                    self.linger_deadline = now + TUN_TCP_FIN_TIMEOUT
            elif self.state is TcpState.CLOSING:
                self.state = TcpState.TIME_WAIT
            elif self.state is TcpState.LAST_ACK:
                self.state = TcpState.CLOSED
        return True

    def _on_data(self, seg: Segment, actions: list[Action]) -> None:
        if self.state not in RECEIVES_DATA:
            if seg.seq != self.rcv_nxt or seg.payload:
                self._send_ack(actions)  # a retransmitted FIN: ACK it again
            return
        payload = seg.payload
        fin = seg.fin
        if seg.seq != self.rcv_nxt:
            if seq_lt(self.rcv_nxt, seg.seq):
                self._send_ack(actions)  # documented: out of order → drop + duplicate ACK
                actions.append(Drop("tcp-out-of-order"))
                return
            old = seq_diff(self.rcv_nxt, seg.seq)
            if old >= len(payload) + (1 if fin else 0):
                self._send_ack(actions)
                actions.append(Drop("tcp-duplicate"))
                return
            payload = payload[old:]
        space = self.settings.rx_capacity - len(self.rx)
        clipped = len(payload) > space
        if clipped:
            payload = payload[:space]
            fin = False  # RFC 9293 §3.10.7.4: what lies beyond the window is not accepted
            actions.append(Drop("tcp-beyond-window"))
        if payload:
            self.rx.append(payload)
            self.rcv_nxt = seq_add(self.rcv_nxt, len(payload))
            actions.append(Readable())
        if fin:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self.rx_eof = True
            actions.append(Readable())
            if self.state is TcpState.ESTABLISHED:
                self.state = TcpState.CLOSE_WAIT
            elif self.state is TcpState.FIN_WAIT_1:
                self.state = TcpState.CLOSING
            else:
                self.state = TcpState.TIME_WAIT
            self._send_ack(actions)
        elif clipped:
            self._send_ack(actions)  # the window is full: say so now
        elif self.ack_pending:
            pass  # already due: one ACK covers every segment of this batch
        else:
            # Delayed ACK per batch (RFC 9293 §3.8.6.3 allows delaying; RFC 5681 §4.2
            # asks at most every second full segment: the stack flushes after each read
            # batch, well within the 500 ms limit).
            self.ack_pending = True
            actions.append(AckLater())

    def _on_timeout(self, now: float, actions: list[Action]) -> None:
        if self.retries >= self.settings.max_retries:
            actions.extend(
                self.abort(f"the app did not acknowledge after {self.retries} retransmissions")
            )
            return
        self.retries += 1
        self.rto = min(self.rto * 2, TUN_TCP_RTO_MAX)  # RFC 6298 §5.5 back off
        self.rtt_seq = None  # Karn: no sample from a retransmitted segment
        if self.state is TcpState.SYN_RECEIVED:
            self._transmit_syn_ack(actions)
        elif self.tx_sent or self.fin_sent:
            # Go back N with a one-segment window, then slow start (RFC 5681 §3.1).
            self.tx_sent = 0
            self.fin_sent = self.fin_acked
            self.snd_nxt = self.snd_una
            self.cwnd = self.snd_mss
            self._output(now, actions)
        elif self.tx and self.snd_wnd == 0:
            self._send_data(0, 1, actions)  # zero-window probe (RFC 9293 §3.8.6.1)
        self.rto_deadline = now + self.rto if self._in_flight() or self.tx else None
