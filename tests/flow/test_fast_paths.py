"""The bulk fast paths agree with the general code they shortcut.

Decoder.decode (IPv6/TCP at fixed offsets, remembered flow keys) must return exactly what
decode() returns, for every flag combination (SYN/FIN/RST/URG, window updates) and for
mutated or truncated packets; TcpHeaders must be byte-exact with tcp_headers_partial;
fill_size must keep every segment within one queued chunk.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.flow import build
from proxy64.flow.segment import ACK, FIN, PSH, RST, SYN, URG, Segment
from proxy64.flow.tcp_flow import DialSucceeded, SegmentArrived, TcpFlow, TcpSettings, Transmit
from proxy64.flow.wire import TCP, Decoder, FlowKey, Malformed, TcpIn, decode
from proxy64.packet import build_tcp
from proxy64.packet.checksum import fold, sum_words
from tests.helpers.app_packets import APP4, APP6, REMOTE4, REMOTE6, app_tcp


def same(a: object, b: object) -> bool:
    """Inbound values equal, payloads compared as bytes and as views of the packet."""
    if isinstance(a, TcpIn) and isinstance(b, TcpIn):
        return (
            a.key == b.key
            and str(a.key) == str(b.key)
            and a.segment == b.segment
            and bytes(a.segment.payload) == bytes(b.segment.payload)
            and type(a.segment.payload) is type(b.segment.payload)
        )
    return a == b


segments = st.builds(
    Segment,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0x3F),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)


@settings(max_examples=400, deadline=None)
@given(segments, st.integers(1, 65535), st.integers(1, 65535))
def test_decoder_matches_decode_on_every_flag_and_window(
    seg: Segment, sport: int, dport: int
) -> None:
    packet = memoryview(app_tcp(seg, sport=sport, dport=dport))
    decoder = Decoder()
    for _ in range(2):  # the second time the key comes from the decoder's memory
        fast = decoder.decode(packet, verify=False)
        assert same(fast, decode(packet, verify=False))
    assert isinstance(fast, TcpIn)
    assert fast.segment.flags == seg.flags  # FIN/RST/URG/PSH survive the fast path


@settings(max_examples=400, deadline=None)
@given(segments, st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       st.integers(0, 400))  # fmt: skip
def test_decoder_matches_decode_on_mutated_packets(
    seg: Segment, flips: list[tuple[int, int]], cut: int
) -> None:
    packet = bytearray(app_tcp(seg))
    for offset, value in flips:
        if offset < len(packet):
            packet[offset] = value
    view = memoryview(bytes(packet[: len(packet) - min(cut, len(packet))]))
    assert same(Decoder().decode(view, verify=False), decode(view, verify=False))


def test_decoder_declines_what_it_does_not_shortcut() -> None:
    decoder = Decoder()
    syn = memoryview(app_tcp(Segment(5, 0, SYN, 65535, mss=1440, wscale=7)))
    inbound = decoder.decode(syn, verify=False)
    assert isinstance(inbound, TcpIn) and inbound.segment.mss == 1440  # options read
    bad = bytearray(app_tcp(Segment(1, 2, ACK, 9, b"x")))
    bad[-1] ^= 0xFF
    assert decoder.decode(memoryview(bytes(bad)), verify=True) == Malformed("tcp-bad_checksum")
    v4 = memoryview(app_tcp(Segment(1, 2, ACK | PSH, 9, b"data"), APP4, REMOTE4))
    assert same(decoder.decode(v4, verify=False), decode(v4, verify=False))


def test_decoder_memory_is_bounded() -> None:
    decoder = Decoder(max_keys=4)
    for port in range(1, 20):
        packet = memoryview(app_tcp(Segment(1, 2, ACK, 9), sport=port))
        inbound = decoder.decode(packet, verify=False)
        assert isinstance(inbound, TcpIn) and inbound.key.app == (APP6, port)
        assert len(decoder._keys) <= 4


def test_decoder_payload_is_a_view_of_the_packet_not_a_copy() -> None:
    data = app_tcp(Segment(1, 2, PSH | ACK | FIN | URG, 9, b"y" * 1000))
    inbound = Decoder().decode(memoryview(data), verify=False)
    assert isinstance(inbound, TcpIn)
    payload = inbound.segment.payload
    assert isinstance(payload, memoryview) and payload.obj is data
    assert bytes(payload) == b"y" * 1000


@settings(max_examples=300, deadline=None)
@given(segments, st.booleans(), st.integers(1, 65535), st.integers(1, 65535))
def test_tcp_headers_template_is_byte_exact(seg: Segment, v4: bool, sport: int, dport: int) -> None:
    app, remote = (APP4, REMOTE4) if v4 else (APP6, REMOTE6)
    key = FlowKey(TCP, (app, sport), (remote, dport))
    template = build.TcpHeaders(key)
    assert template.headers(seg) == build.tcp_headers_partial(key, seg)
    with_options = Segment(seg.seq, seg.ack, SYN | ACK, seg.window, mss=1440, wscale=5)
    assert template.headers(with_options) == build.tcp_headers_partial(key, with_options)


def test_tcp_headers_template_checksum_completes_to_zero() -> None:
    """Partial sum + payload sum = a valid checksum: what the kernel will finish."""
    key = FlowKey(TCP, (APP6, 40000), (REMOTE6, 80))
    seg = Segment(7, 9, PSH | ACK, 512, b"payload bytes" * 77)
    headers, start = build.TcpHeaders(key).headers(seg)
    tcp = bytearray(headers[start:])
    (partial,) = struct.unpack_from("!H", tcp, 16)
    struct.pack_into("!H", tcp, 16, 0)
    full = build.tcp_packet(key, seg)
    # full checksum = ~fold(pseudo + header + payload); partial = fold(pseudo)
    (checksum,) = struct.unpack_from("!H", full, start + 16)
    assert (0xFFFF - fold(partial + sum_words(bytes(tcp) + seg.payload))) == checksum


def _established(tso: bool = True, mss: int = 1000) -> TcpFlow:
    settings_ = TcpSettings(mss=mss, rx_capacity=1 << 20, tx_capacity=1 << 20,
                            max_retries=8, tso=tso)  # fmt: skip
    flow = TcpFlow(Segment(100, 0, SYN, 65535, mss=mss, wscale=7), 5000, settings_, 0.0)
    flow.handle(DialSucceeded(), 0.0)
    flow.handle(SegmentArrived(Segment(101, 5001, ACK, 0xFFFF)), 0.0)
    return flow


def test_fill_size_keeps_each_segment_in_one_chunk() -> None:
    """A sender that hands over fill_size() bytes (after a short read) never makes a
    segment span two chunks: every payload sent is one chunk or a view into one."""
    flow = _established()
    size = flow.segment_size
    chunks: list[bytes] = []
    sent: list[Segment] = []
    for n in (size // 3, None, None, 17, None, None):  # short reads, then fills
        want = flow.fill_size()
        assert 0 < want <= size
        data = bytes([len(chunks) % 251]) * (want if n is None else min(n, want))
        chunks.append(data)
        accepted, actions = flow.send(data, 0.0, more=True)
        assert accepted == len(data)
        sent += [a.segment for a in actions if isinstance(a, Transmit)]
    assert sent and all(len(s.payload) == size for s in sent)
    joined = b"".join(chunks)
    assert b"".join(bytes(s.payload) for s in sent) == joined[: len(sent) * size]
    # after each short read, one segment joins it with the fill; the segments after that
    # are the stored chunks themselves (no copy): [0+1] joined, [2] as is, [3+4], [5]
    assert sent[1].payload is chunks[2] and sent[3].payload is chunks[5]
    # the tail is pushed when the sender pauses
    pushed = [a.segment for a in flow.push(0.0) if isinstance(a, Transmit)]
    assert b"".join(bytes(s.payload) for s in sent + pushed) == joined


def test_fast_decoded_rst_and_fin_drive_the_flow_like_decode() -> None:
    """RFC 5961 §3.2 exact-match RST and a FIN arrive through the fast path intact."""
    for flags, state in ((RST | ACK, "CLOSED"), (FIN | ACK, "CLOSE-WAIT")):
        flow = _established()
        packet = memoryview(app_tcp(Segment(101, 5001, flags, 0xFFFF)))
        inbound = Decoder().decode(packet, verify=False)
        assert isinstance(inbound, TcpIn)
        flow.handle(SegmentArrived(inbound.segment), 0.0)
        assert flow.state.value == state


def test_fill_size_adds_whole_segments_up_to_most() -> None:
    flow = _established()
    size = flow.segment_size
    assert flow.fill_size() == size
    assert flow.fill_size(size * 3 + size // 2) == size * 3
    flow.send(b"t" * 10, 0.0, more=True)  # a held partial segment of 10 bytes
    assert flow.fill_size() == size - 10
    assert flow.fill_size(size * 2) == size - 10 + size
    assert flow.fill_size(1) == size - 10  # never less than what completes the segment


def test_the_syns_key_is_the_one_remembered() -> None:
    """The flow table is keyed by the SYN's FlowKey; later packets reuse that very object
    (dict lookups then match by identity)."""
    decoder = Decoder()
    first = decoder.decode(memoryview(app_tcp(Segment(5, 0, SYN, 65535, mss=1440))), verify=False)
    later = decoder.decode(memoryview(app_tcp(Segment(6, 9, ACK, 100))), verify=False)
    checked = decoder.decode(memoryview(app_tcp(Segment(6, 9, ACK, 100, b"z"))), verify=True)
    assert isinstance(first, TcpIn) and isinstance(later, TcpIn) and isinstance(checked, TcpIn)
    assert later.key is first.key and checked.key is first.key


# RFC 2018 SACK (kind 5, one block) and RFC 7323 timestamps (kind 8) on data and ACKs
SACK_TS = (
    b"\x01\x01\x05\x0a" + (1000).to_bytes(4, "big") + (2000).to_bytes(4, "big")
    + b"\x01\x01\x08\x0a" + (7).to_bytes(4, "big") + (9).to_bytes(4, "big")
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x3F).filter(lambda f: not f & SYN), st.integers(0, 0xFFFF),
       st.binary(max_size=100))  # fmt: skip
def test_options_on_non_syn_segments_are_skipped_like_decode(
    flags: int, window: int, payload: bytes
) -> None:
    """A pure ACK or data segment carrying SACK blocks and timestamps: the fast path
    starts the payload after the options (data offset) and keeps flags and window."""
    packet = memoryview(build_tcp(APP6, REMOTE6, 40000, 80, 11, 22, flags, window,
                                  options=SACK_TS, payload=payload))  # fmt: skip
    fast = Decoder().decode(packet, verify=False)
    assert same(fast, decode(packet, verify=False))
    assert isinstance(fast, TcpIn)
    assert bytes(fast.segment.payload) == payload
    assert (fast.segment.flags, fast.segment.window) == (flags, window)
