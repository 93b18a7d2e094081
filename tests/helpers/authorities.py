"""Request authorities for hypothesis (RFC 3986 §3.2): hosts valid and not, and ports
valid, out of range, empty or junk; for the parsers of a request target's authority."""

from __future__ import annotations

from hypothesis import strategies as st

HOSTS = st.one_of(
    st.ip_addresses(v=4).map(lambda a: str(a).encode()),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]".encode()),
    st.from_regex(rb"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z"),
    st.from_regex(rb"\A\d{1,4}(\.\d{1,4}){2,4}\Z"),  # dotted numbers, valid or not
    st.from_regex(rb"\A\[[0-9a-fA-F:.%a-z]{0,30}\]?\Z"),  # bracketed, valid or not
    st.binary(max_size=12),
)
PORTS = st.one_of(
    st.just(b""),
    st.integers(0, 70000).map(lambda p: b":%d" % p),
    st.binary(max_size=6).map(lambda b: b":" + b),
)
