"""TCP options (RFC 9293 §3.2, RFC 7323, RFC 2018): the parser takes any bytes to a value
or PacketError, and encode -> parse gives back what was encoded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.errors import PacketError, PacketValueError
from proxy64.packet import NO_OPTIONS, Reason, TcpOptions, encode_tcp_options, parse_tcp_options

u32 = st.integers(0, 0xFFFFFFFF)
options = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(0, 0xFFFF),
    window_scale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    timestamps=st.none() | st.tuples(u32, u32),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=3).map(tuple),
    unknown=st.lists(
        st.tuples(st.sampled_from([6, 7, 19, 28, 29, 30, 34, 254]), st.binary(max_size=6)),
        max_size=2,
    ).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(options)
def test_encode_then_parse_round_trip(opts: TcpOptions) -> None:
    try:
        raw = encode_tcp_options(opts)
    except PacketValueError:
        return  # more than 40 bytes: refused, never truncated
    assert len(raw) % 4 == 0 and len(raw) <= 40
    assert parse_tcp_options(memoryview(raw)) == opts


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_give_options_or_packet_error(raw: bytes) -> None:
    try:
        parsed = parse_tcp_options(memoryview(raw), 20)
    except PacketError as exc:
        assert exc.layer == "tcp" and exc.reason is Reason.BAD_TCP_OPTION
        assert 20 <= exc.offset < 20 + len(raw)
    else:
        assert isinstance(parsed, TcpOptions)


def test_rfc9293_3_2_known_layouts() -> None:
    linux_syn = bytes.fromhex("020405b40402080a0001e2400000000001030307")
    assert parse_tcp_options(memoryview(linux_syn)) == TcpOptions(
        mss=1460, window_scale=7, sack_permitted=True, timestamps=(123456, 0)
    )
    assert encode_tcp_options(TcpOptions(mss=1460, window_scale=7, sack_permitted=True,
                                         timestamps=(123456, 0))) == linux_syn  # fmt: skip
    assert parse_tcp_options(memoryview(b"")) is NO_OPTIONS
    assert parse_tcp_options(memoryview(b"\x00\x02\x04")) == NO_OPTIONS  # after End of List
    assert encode_tcp_options(TcpOptions(mss=536)) == b"\x02\x04\x02\x18"
    assert encode_tcp_options(TcpOptions(window_scale=0)) == b"\x01\x03\x03\x00"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x02",  # kind without length
        b"\x02\x01\x00\x00",  # length below 2
        b"\x02\x05\x00\x00\x00\x00\x00\x00",  # MSS must be 4 long
        b"\x03\x04\x00\x00",  # window scale must be 3 long
        b"\x08\x0a\x00",  # runs past the area
        b"\x05\x07" + bytes(5),  # SACK not 2 + 8n
    ],
)
def test_bad_lengths_are_refused(raw: bytes) -> None:
    with pytest.raises(PacketError) as info:
        parse_tcp_options(memoryview(raw))
    assert info.value.reason is Reason.BAD_TCP_OPTION
