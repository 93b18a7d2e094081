"""The forwarded request and response skip h11's second check of their fields
(proto/h11_checked.py). These tests hold that to h11's full check on arbitrary heads: for
every request h11 parses and classify() forwards, and every response h11 parses and the
exchange passes on, h11's checking construction accepts the same fields, and both events
encode to the same bytes. They fail if h11 stops taking the switch, or if proxy64 adds a
field h11 would refuse."""

from __future__ import annotations

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.errors import RemoteProtocolError
from proxy64.proto.h11_checked import checked_request, checked_response
from proxy64.proto.http_headers import Header, scan_response
from proxy64.proto.httpproxy import ForwardTarget, classify
from tests.helpers.authorities import HOSTS, PORTS

# Field names h11 reads as tokens, and values with what RFC 9110 §5.5 allows at its edges:
# obs-text, inner spaces and tabs, commas, quotes; and bytes it refuses (CTLs), which must
# stop at h11's parser and never reach a forwarded event.
NAMES = st.one_of(
    st.sampled_from(
        [b"Host", b"Via", b"Connection", b"Max-Forwards", b"Content-Length", b"X-A", b"te"]
    ),
    st.from_regex(rb"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}\Z"),
)
VALUES = st.one_of(
    st.sampled_from([b"close", b"x-a", b"3", b"0", b"1.1 other", b"a\tb", b'"q"', b"\xe9t\xe9"]),
    st.binary(max_size=16),
)
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
METHODS = st.sampled_from([b"GET", b"POST", b"OPTIONS", b"TRACE", b"DELETE", b"X-CUSTOM!"])
PATHS = st.one_of(st.just(b""), st.from_regex(rb"\A[/?][!-~]{0,20}\Z"), st.binary(max_size=10))


def lines(fields: list[Header]) -> bytes:
    return b"".join(b"%s: %s\r\n" % field for field in fields)


def same_event(fast: h11.Request | h11.Response, full: h11.Request | h11.Response) -> None:
    assert type(fast) is type(full)
    assert fast.headers.raw_items() == full.headers.raw_items()
    assert list(fast.headers) == list(full.headers)  # lower-cased names, as h11 keeps them
    assert fast.http_version == full.http_version


@settings(max_examples=500)
@given(METHODS, HOSTS, PORTS, PATHS, FIELDS, st.sampled_from([b"1.0", b"1.1"]))
@example(b"GET", b"o.example", b":81", b"/p", [(b"Max-Forwards", b"3")], b"1.1")
@example(b"OPTIONS", b"[::1]", b"", b"", [(b"max-forwards", b" 9 ")], b"1.0")
@example(b"GET", b"o.example", b":", b"/\x80", [(b"X", b"\xff \t\xfe")], b"1.1")
def test_a_forwarded_request_is_what_h11s_full_check_makes(
    method: bytes,
    host: bytes,
    port: bytes,
    path: bytes,
    fields: list[Header],
    version: bytes,
) -> None:
    raw = b"%s http://%s%s%s HTTP/%s\r\n%s\r\n" % (method, host, port, path, version, lines(fields))
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(raw)
    try:
        request = parser.next_event()
    except h11.RemoteProtocolError:
        return  # refused where it is read: never classified
    if not isinstance(request, h11.Request):
        return  # more than a head's bytes were asked for (a line ended too early)
    try:
        target = classify(request)
    except RemoteProtocolError:
        return
    if not isinstance(target, ForwardTarget):
        return  # answered by proxy64 itself
    fast = target.request
    forwarded = fast.headers.raw_items()
    full = h11.Request(method=fast.method, target=fast.target, headers=forwarded)
    same_event(fast, full)
    assert (fast.method, fast.target) == (full.method, full.target)
    assert checked_request(fast.method, fast.target, forwarded) == fast
    upstream = [h11.Connection(h11.CLIENT) for _ in range(2)]
    assert upstream[0].send(fast) == upstream[1].send(full)


STATUSES = st.one_of(st.sampled_from([200, 204, 301, 404, 503]), st.integers(100, 999))
REASONS = st.one_of(
    st.sampled_from([b"OK", b"", b"Not Found", b"caf\xe9 \tx"]), st.binary(max_size=12)
)


@settings(max_examples=500)
@given(STATUSES, REASONS, FIELDS, st.sampled_from([b"1.0", b"1.1"]), st.booleans())
@example(200, b"OK", [(b"Connection", b"x-a"), (b"X-A", b"1")], b"1.1", False)
@example(200, b"OK", [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")], b"1.1", True)
@example(404, b"\xfe\xff", [(b"Server", b"\x80\t\x81")], b"1.0", False)
def test_a_passed_on_response_is_what_h11s_full_check_makes(
    status: int, reason: bytes, fields: list[Header], version: bytes, client_http10: bool
) -> None:
    origin_side = h11.Connection(h11.CLIENT)
    origin_side.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"o")]))
    origin_side.send(h11.EndOfMessage())
    origin_side.receive_data(b"HTTP/%s %d %s\r\n%s\r\n" % (version, status, reason, lines(fields)))
    try:
        response = origin_side.next_event()
    except h11.RemoteProtocolError:
        return  # refused where it is read: never passed on
    if not isinstance(response, h11.Response):
        return  # an interim response, or more bytes asked for
    raw = response.headers.raw_items()
    headers = scan_response(b"GET", response.status_code, raw, response.http_version).forwarded
    fast = checked_response(response.status_code, headers, response.reason)
    full = h11.Response(status_code=response.status_code, headers=headers, reason=response.reason)
    same_event(fast, full)
    assert (fast.status_code, fast.reason) == (full.status_code, full.reason)
    encoded = []
    for made in (fast, full):
        client_side = h11.Connection(h11.SERVER)
        asked = b"HTTP/1.0" if client_http10 else b"HTTP/1.1"
        client_side.receive_data(b"GET http://o/ %s\r\nHost: o\r\n\r\n" % asked)
        client_side.next_event()
        encoded.append(client_side.send(made))
    assert encoded[0] == encoded[1]
