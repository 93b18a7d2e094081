"""The TUN TCP endpoint's state and its sending side (proxy64/flow/tcp_flow.py is the rest).

TcpEndpoint holds every variable of RFC 9293 §3.3.1 (SND.UNA/NXT/WND, RCV.NXT, the send
and receive buffers) and builds every segment we send: data within the app's window and
our congestion window, FIN after the data, SYN-ACK, ACKs that always advertise the free
receive buffer, and the RFC 6298 timer (SRTT/RTTVAR, backoff). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy64.defaults import (
    TUN_TCP_RTO_INITIAL,
    TUN_TCP_RTO_MAX,
    TUN_TCP_RTO_MIN,
    TUN_TCP_WSCALE,
)
from proxy64.errors import LocalProtocolError
from proxy64.flow.byte_queue import ByteQueue
from proxy64.flow.segment import (
    ACK,
    FIN,
    PSH,
    SYN,
    Segment,
    seq_add,
    seq_lt,
)
from proxy64.flow.tcp_events import (
    SENDS_DATA,
    Action,
    Closed,
    Readable,
    TcpState,
    Transmit,
    Writable,
)

DEFAULT_MSS = 536  # RFC 9293 §3.7.1: assumed when the SYN carries no MSS option
DUPACK_THRESHOLD = 3  # RFC 5681 §3.2
TSO_MAX_PAYLOAD = 65535 - 60 - 40  # a GSO super-segment must fit one IP packet
MAX_WSCALE = 14  # RFC 7323 §2.3


@dataclass(frozen=True, slots=True)
class TcpSettings:
    mss: int  # our MSS: TUN MTU minus IP and TCP headers
    rx_capacity: int  # app → destination buffer (the advertised window)
    tx_capacity: int  # destination → app buffer
    max_retries: int
    tso: bool = False  # segments may be several MSS long; the kernel splits them (GSO)


class TcpEndpoint:
    """State and output of one app connection; TcpFlow adds the event handling."""

    def __init__(self, syn: Segment, iss: int, settings: TcpSettings, now: float) -> None:
        if not syn.syn or syn.has_ack or syn.rst:
            raise LocalProtocolError(f"a TCP flow starts with a bare SYN, not {syn.describe()}")
        self.settings = settings
        self.state = TcpState.LISTEN
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.iss = iss & 0xFFFFFFFF
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        # RFC 7323 §2.2: scaling only when both SYNs carry the option.
        self.snd_wscale = min(syn.wscale, MAX_WSCALE) if syn.wscale is not None else 0
        self.rcv_wscale = TUN_TCP_WSCALE if syn.wscale is not None else 0
        self.snd_wnd = syn.window  # a SYN's window is never scaled (RFC 7323 §2.2)
        self.snd_wl1 = syn.seq
        self.snd_wl2 = 0
        self.snd_mss = min(syn.mss or DEFAULT_MSS, settings.mss)
        self.cwnd = 1 << 62  # a virtual link: only cut after a timeout (RFC 5681 §3.1)
        self.rx = ByteQueue()
        self.rx_eof = False
        self.tx = ByteQueue()  # bytes from snd_una on: sent-unacknowledged then unsent
        self.tx_sent = 0
        self.tx_eof = False
        # Corked (TCP_CORK-like, set by send(more=True)): a partial last segment is held
        # until more data fills it or push(); the I/O layer pushes within a few scheduler
        # passes, so a bulk sender's next chunk joins the tail instead of a tiny segment.
        self.corked = False
        self.fin_sent = False
        self.fin_acked = False
        self.detached = False  # the stream side closed; data that arrives now gets RST
        self.reset_reason: str | None = None
        self.rto = TUN_TCP_RTO_INITIAL
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rtt_seq: int | None = None
        self.rtt_start = 0.0
        self.retries = 0
        self.rto_deadline: float | None = None
        self.dupacks = 0
        self.last_adv = 0  # the window we last advertised, in bytes
        self.adv_edge = self.rcv_nxt  # its right edge: rcv_nxt + last_adv then (mod 2**32)
        self.ack_pending = False  # in-order data arrived, its ACK waits for flush_ack()
        self.linger_deadline: float | None = None  # FIN-WAIT-2 after close(): give up then
        self.created = now

    # --- public API --------------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        if self.linger_deadline is None:
            return self.rto_deadline
        if self.rto_deadline is None:
            return self.linger_deadline
        return min(self.rto_deadline, self.linger_deadline)

    @property
    def can_send(self) -> bool:
        return self.state in SENDS_DATA and not self.tx_eof and self.reset_reason is None

    @property
    def send_space(self) -> int:
        return max(0, self.settings.tx_capacity - len(self.tx))

    @property
    def segment_size(self) -> int:
        """The payload of one full segment we send (a TSO super-segment with tso): data
        handed over in pieces of this size leaves without being split or joined."""
        return self._segment_limit()

    @property
    def holds_tail(self) -> bool:
        """Bytes are queued but not sent (a corked partial segment, or the window is full)."""
        return len(self.tx) > self.tx_sent

    def fill_size(self, most: int = 0) -> int:
        """How many bytes to queue next so the send buffer ends on a segment boundary: the
        rest of a held partial segment, else one whole segment, plus as many whole
        segments as fit in most. A sender that hands over pieces of this size gets each
        segment out of one piece (no join copy in peek)."""
        limit = self._segment_limit()
        fill = limit - (len(self.tx) - self.tx_sent) % limit
        return fill + max(0, most - fill) // limit * limit

    @property
    def readable(self) -> bool:
        return bool(self.rx) or self.rx_eof or self.reset_reason is not None

    # --- output ------------------------------------------------------------------------
    def _output(self, now: float, actions: list[Action]) -> None:
        if self.state not in SENDS_DATA:
            return
        limit = min(self.snd_wnd, self.cwnd)
        segment_limit = self._segment_limit()
        hold_tail = self.corked and not self.tx_eof
        while self.tx_sent < len(self.tx):
            room = limit - self.tx_sent
            if room <= 0:
                break
            unsent = len(self.tx) - self.tx_sent
            if hold_tail and unsent < segment_limit <= room:
                break  # corked: the partial tail waits for more data or push()
            n = min(segment_limit, unsent, room)
            self._send_data(self.tx_sent, n, actions)
            if self.rtt_seq is None:
                self.rtt_seq, self.rtt_start = self.snd_nxt, now
        if self.tx_eof and not self.fin_sent and self.tx_sent == len(self.tx):
            self.fin_sent = True
            actions.append(Transmit(self._make(FIN | ACK, self.snd_nxt)))
            self.snd_nxt = seq_add(self.snd_nxt, 1)
            if self.state is TcpState.ESTABLISHED:
                self.state = TcpState.FIN_WAIT_1
            elif self.state is TcpState.CLOSE_WAIT:
                self.state = TcpState.LAST_ACK
        if self.rto_deadline is None and (self._in_flight() or self.tx):
            self._arm(now)

    def _segment_limit(self) -> int:
        """One MSS, or with TSO as many whole MSS as fit a 64 KiB IP packet."""
        if not self.settings.tso:
            return self.snd_mss
        return max(1, TSO_MAX_PAYLOAD // self.snd_mss) * self.snd_mss

    def _send_data(self, offset: int, n: int, actions: list[Action]) -> None:
        seq = seq_add(self.snd_una, offset)
        payload = self.tx.peek(offset, n)
        actions.append(Transmit(self._make(PSH | ACK, seq, payload)))
        self.tx_sent = max(self.tx_sent, offset + n)
        end = seq_add(seq, n)
        if seq_lt(self.snd_nxt, end):
            self.snd_nxt = end

    def _retransmit_first(self, actions: list[Action]) -> None:
        if self.tx_sent:
            n = min(self.snd_mss, self.tx_sent)
            actions.append(Transmit(self._make(PSH | ACK, self.snd_una, self.tx.peek(0, n))))
        elif self.fin_sent and not self.fin_acked:
            actions.append(Transmit(self._make(FIN | ACK, self.snd_una)))

    def _transmit_syn_ack(self, actions: list[Action]) -> None:
        seg = Segment(
            self.iss,
            self.rcv_nxt,
            SYN | ACK,
            min(self.settings.rx_capacity, 0xFFFF),  # never scaled in a SYN (RFC 7323 §2.2)
            mss=self.settings.mss,
            wscale=self.rcv_wscale if self.snd_wscale or self.rcv_wscale else None,
        )
        actions.append(Transmit(seg))

    def _send_ack(self, actions: list[Action]) -> None:
        actions.append(Transmit(self._make(ACK, self.snd_nxt)))

    def _make(self, flags: int, seq: int, payload: bytes | memoryview = b"") -> Segment:
        self.ack_pending = False  # every segment we send carries the current ACK
        free = self._free_window()
        self.last_adv = free
        field = min(free >> self.rcv_wscale, 0xFFFF)
        self.adv_edge = seq_add(self.rcv_nxt, field << self.rcv_wscale)  # what the app sees
        return Segment(seq, self.rcv_nxt, flags, field, payload)

    def _free_window(self) -> int:
        return max(0, self.settings.rx_capacity - len(self.rx))

    def _in_flight(self) -> bool:
        return self.snd_nxt != self.snd_una

    def _arm(self, now: float) -> None:
        self.rto_deadline = now + self.rto

    def _rtt_sample(self, rtt: float) -> None:
        # RFC 6298 §2.2-2.3 (alpha 1/8, beta 1/4, K=4); the floor is TUN_TCP_RTO_MIN.
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(max(self.srtt + 4 * self.rttvar, TUN_TCP_RTO_MIN), TUN_TCP_RTO_MAX)

    def _maybe_finished(self, actions: list[Action]) -> None:
        if self.state is TcpState.TIME_WAIT and self.fin_acked:
            self._close("finished", actions, reset=False)  # TIME-WAIT skipped, see above
        elif self.state is TcpState.CLOSED:
            self._close("finished", actions, reset=False)

    def _close(self, reason: str, actions: list[Action], *, reset: bool) -> None:
        self.state = TcpState.CLOSED
        self.rto_deadline = None
        self.linger_deadline = None
        if reset:
            self.reset_reason = reason
        actions.append(Closed(reason, reset))
        actions.append(Readable())
        actions.append(Writable())
