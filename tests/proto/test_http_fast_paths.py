"""The one-pass header scans, the remembered authorities and the remembered Destination
text give what the plain definitions give, on arbitrary input.

Each reference below is the field-by-field definition written out plainly (one pass per
question, as RFC 9110 / RFC 9112 state them); the product answers the same questions in
fewer passes, and these tests hold it to the references.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import RemoteProtocolError
from proxy64.proto.http_headers import (
    HOP_BY_HOP,
    MAX_CONTENT_LENGTH,
    Header,
    has_content,
    keeps_alive,
    scan_request,
    scan_response,
)
from proxy64.proto.httpproxy import (
    ForwardTarget,
    _parse_authority,
    classify,
    head_size,
    parse_authority,
)
from tests.helpers.authorities import HOSTS, PORTS
from tests.helpers.http_heads import head

# --- references: one plain pass per question ----------------------------------------------


def ref_options(headers: Sequence[Header]) -> set[bytes]:
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() in (b"connection", b"proxy-connection")
        for token in value.split(b",")
        if token.strip()
    }


def ref_end_to_end(headers: Sequence[Header]) -> list[Header]:
    drop = HOP_BY_HOP | ref_options(headers)
    return [(n, v) for n, v in headers if n.lower() not in drop]


def ref_chunked(headers: Sequence[Header]) -> bool:
    return any(
        n.lower() == b"transfer-encoding"
        and [c.strip().lower() for c in v.split(b",")][-1] == b"chunked"
        for n, v in headers
    )


def ref_oversized(headers: Sequence[Header]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            for part in value.split(b","):
                text = part.strip()
                if text.isdigit() and int(text) > MAX_CONTENT_LENGTH:
                    return text
    return None


def ref_has_content(headers: Sequence[Header]) -> bool:
    return any(
        n.lower() == b"transfer-encoding" or (n.lower() == b"content-length" and v.strip() != b"0")
        for n, v in headers
    )


def ref_expects_continue(headers: Sequence[Header]) -> bool:
    return any(n.lower() == b"expect" and v.strip().lower() == b"100-continue" for n, v in headers)


def ref_upstream(headers: Sequence[Header], host: bytes, version: bytes) -> list[Header]:
    kept = [(n, v) for n, v in ref_end_to_end(headers) if n.lower() not in (b"host", b"expect")]
    chunked = [(b"Transfer-Encoding", b"chunked")] if ref_chunked(headers) else []
    return [(b"Host", host), *kept, *chunked, (b"Via", version + b" proxy64")]


def ref_downstream(headers: Sequence[Header], version: bytes) -> list[Header]:
    kept = ref_end_to_end(headers)
    if ref_chunked(headers):
        kept = [(n, v) for n, v in kept if n.lower() != b"content-length"]
    return [*kept, (b"Via", version + b" proxy64")]


def ref_keeps_alive(headers: Sequence[Header], version: bytes) -> bool:
    tokens = {
        t.strip().lower() for n, v in headers if n.lower() == b"connection" for t in v.split(b",")
    }
    return version >= b"1.1" and b"close" not in tokens


# --- header lists: the names each scan looks for, in any case, with tricky values ---------

NOTABLE = sorted(
    HOP_BY_HOP | {b"host", b"expect", b"content-length", b"max-forwards", b"x-other", b"via"}
)
NAME = st.one_of(
    st.sampled_from(NOTABLE),
    st.sampled_from(NOTABLE).map(bytes.upper),
    st.sampled_from(NOTABLE).map(bytes.title),
    st.text(alphabet="abcdefghij-", min_size=1, max_size=8).map(str.encode),
)
VALUE = st.one_of(
    st.binary(max_size=24),
    st.lists(
        st.sampled_from(
            [
                b"close",
                b" Close ",
                b"chunked",
                b"CHUNKED ",
                b"gzip",
                b"0",
                b" 0",
                b"100-continue",
                b"100-Continue ",
                b"keep-alive",
                b"x-other",
                b"VIA",
                b"",
                b" ",
                b"12",
                b"9223372036854775807",
                b"9223372036854775808",
                b"00000000000000000000000001",
                b"99999999999999999999",
            ]
        ),
        max_size=4,
    ).map(b",".join),
)
HEADERS = st.lists(st.tuples(NAME, VALUE), max_size=12)


@settings(max_examples=600)
@given(HEADERS)
@example([(b"Connection", b"X-Other"), (b"x-other", b"1"), (b"Host", b"a")])
@example([(b"Transfer-Encoding", b"gzip, chunked"), (b"Content-Length", b"5")])
@example([(b"Content-Length", b"1, 99999999999999999999")])
@example([(b"Max-Forwards", b" 3 "), (b"max-forwards", b"x")])
@example([(b"Connection", b"content-length"), (b"Content-Length", b"7")])
@example([(b"content-length", b" 0 "), (b"Expect", b" 100-CONTINUE")])
def test_the_request_scan_agrees_with_each_definition(headers: list[Header]) -> None:
    scan = scan_request(headers)
    assert scan.size == sum(len(n) + len(v) + 4 for n, v in headers)
    assert scan.oversized == ref_oversized(headers)
    names = {n.lower() for n, _ in headers}
    assert scan.both_framings == (b"transfer-encoding" in names and b"content-length" in names)
    assert scan.content == ref_has_content(headers) == has_content(headers)
    assert scan.continue_expected == ref_expects_continue(headers)
    assert scan.chunked == ref_chunked(headers)
    firsts = [v.strip() for n, v in headers if n.lower() == b"max-forwards"]
    assert scan.max_forwards == (firsts[0] if firsts else None)
    expected = ref_upstream(headers, b"h.example:8", b"1.0")
    assert scan.upstream_headers(b"h.example:8", b"1.0") == expected


def ref_body_length(method: bytes, status: int, headers: Sequence[Header]) -> int | None:
    """RFC 9112 §6.3: no body for HEAD, 1xx, 204, 304 (rule 1); Transfer-Encoding overrides
    Content-Length (rule 3); else the first Content-Length, when it is a number (rule 6)."""
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return None
    if any(n.lower() == b"transfer-encoding" for n, _ in headers):
        return None
    lengths = [v.strip() for n, v in headers if n.lower() == b"content-length"]
    if not lengths or not (lengths[0].isascii() and lengths[0].isdigit()):
        return None
    return int(lengths[0])


METHODS = st.sampled_from([b"GET", b"HEAD", b"POST"])
STATUSES = st.sampled_from([100, 101, 200, 204, 304, 404])


@settings(max_examples=600)
@given(HEADERS, st.sampled_from([b"1.0", b"1.1"]), METHODS, STATUSES)
@example([(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")], b"1.1", b"GET", 200)
@example([(b"Proxy-Connection", b"server"), (b"Server", b"x")], b"1.1", b"GET", 200)
@example([(b"Connection", b"keep-alive, CLOSE")], b"1.1", b"GET", 200)
@example([(b"Proxy-Connection", b"close")], b"1.1", b"GET", 200)
@example([(b"Connection", b"closed")], b"1.1", b"GET", 200)
@example([(b"Content-Length", b"x"), (b"Content-Length", b"5")], b"1.1", b"GET", 200)
@example([(b"Content-Length", b" 7 "), (b"Content-Length", b"x")], b"1.1", b"POST", 404)
@example([(b"Content-Length", b"\xd9\xa3")], b"1.1", b"GET", 200)
@example([(b"Content-Length", b"99999999999999999999")], b"1.1", b"GET", 200)
def test_the_response_scan_agrees_with_each_definition(
    headers: list[Header], version: bytes, method: bytes, status: int
) -> None:
    original = list(headers)
    scan = scan_response(method, status, headers, version)
    assert scan.forwarded == ref_downstream(headers, version)
    assert scan.keeps_alive == ref_keeps_alive(headers, version) == keeps_alive(headers, version)
    assert scan.oversized == ref_oversized(headers)
    assert scan.body_length == ref_body_length(method, status, headers)
    assert headers == original  # nothing rewritten in place


# --- classify, end to end through h11, against the references ----------------------------

EXTRA = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"Connection",
                b"Proxy-Connection",
                b"Expect",
                b"Max-Forwards",
                b"Keep-Alive",
                b"X-Other",
                b"Accept",
                b"Content-Length",
                b"Via",
                b"TE",
            ]
        ),
        st.sampled_from([b"close", b"x-other", b"100-continue", b"2", b"0", b"trailers", b"a"]),
    ),
    max_size=6,
)


@settings(max_examples=300)
@given(EXTRA, st.sampled_from([b"GET", b"POST", b"OPTIONS", b"TRACE"]))
def test_classify_forwards_what_the_references_say(headers: list[Header], method: bytes) -> None:
    lines = b"".join(b"%s: %s\r\n" % h for h in headers)
    raw = b"%s http://o.example:81/p HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method, lines)
    try:
        request = head(raw)
    except h11.RemoteProtocolError:
        return  # h11 refuses it (conflicting Content-Length): never reaches classify
    try:
        target = classify(request)
    except RemoteProtocolError as exc:
        assert exc.http_status == 400 and "Max-Forwards" in str(exc)
        return
    if not isinstance(target, ForwardTarget):
        return  # Max-Forwards: 0 answered locally
    given_headers = request.headers.raw_items()
    line = len(method) + len(request.target) + len(b" HTTP/1.1\r\n") + 1
    wire = line + sum(len(n) + len(v) + 4 for n, v in given_headers) + 2
    assert head_size(request, scan_request(given_headers)) == wire
    expected = ref_upstream(given_headers, b"o.example:81", b"1.1")
    sent = target.request.headers.raw_items()
    firsts = [v.strip() for n, v in given_headers if n.lower() == b"max-forwards"]
    if method in (b"OPTIONS", b"TRACE") and firsts:  # RFC 9110 §7.6.2: decremented
        hops = b"%d" % (int(firsts[0]) - 1)
        expected = [(n, hops if n.lower() == b"max-forwards" else v) for n, v in expected]
    assert sent == expected
    assert target.expects_continue == ref_expects_continue(given_headers)
    idempotent = method in (b"GET", b"OPTIONS", b"TRACE")
    assert target.retryable == (idempotent and not ref_has_content(given_headers))


# --- remembered authorities ---------------------------------------------------------------


def outcome(parse: object, authority: bytes, default_port: int | None) -> object:
    assert callable(parse)
    try:
        return parse(authority, default_port)
    except RemoteProtocolError as exc:
        return (exc.http_status, str(exc))


@settings(max_examples=400)
@given(HOSTS, PORTS, st.sampled_from([None, 80]))
@example(b"[fe80::1%eth0]", b":80", None)
@example(b"Example.COM.", b"", 80)
@example(b"user@host", b":80", 80)
@example(b"a" * 300, b":80", 80)
def test_the_remembered_authority_is_the_parsed_one(
    host: bytes, port: bytes, default_port: int | None
) -> None:
    authority = host + port
    plain = outcome(parse_authority, authority, default_port)
    for _ in range(2):  # a miss, then (for a valid one) a hit
        remembered = outcome(_parse_authority, authority, default_port)
        assert remembered == plain
        if isinstance(plain, Destination):
            assert isinstance(remembered, Destination)
            assert type(remembered.host) is type(plain.host)


def test_a_refused_authority_is_refused_every_time_with_the_same_words() -> None:
    texts = {outcome(_parse_authority, b"[::1:80", 80) for _ in range(3)}
    assert texts == {(400, "'[::1:80': IPv6 address without closing ']'")}


# --- remembered Destination text ----------------------------------------------------------


def ref_text(destination: Destination) -> str:
    if isinstance(destination.host, IPv6Address):
        return f"[{destination.host}]:{destination.port}"
    return f"{destination.host}:{destination.port}"


DESTINATIONS = st.builds(
    Destination,
    st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(v=6),
        st.from_regex(r"\A[a-z0-9_][a-z0-9_.-]{0,30}\Z"),
    ),
    st.integers(0, 65535),
)


@settings(max_examples=400)
@given(DESTINATIONS)
@example(Destination(IPv6Address("fe80::1%eth0"), 443))
@example(Destination(IPv4Address("192.0.2.1"), 80))
def test_the_remembered_destination_text_is_the_formatted_one(destination: Destination) -> None:
    assert str(destination) == ref_text(destination)
    twin = Destination(destination.host, destination.port)  # equal, another object
    assert str(twin) == str(destination) == ref_text(twin)
    assert str(Destination(destination.host, (destination.port + 1) % 65536)) == ref_text(
        Destination(destination.host, (destination.port + 1) % 65536)
    )
