"""proxy64.proto.httpproxy and http_headers: request targets, hop-by-hop, Via, auth, errors."""

from __future__ import annotations

import base64
from ipaddress import IPv4Address, IPv6Address

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination
from proxy64.errors import RemoteProtocolError
from proxy64.proto.http_headers import HOP_BY_HOP, scan_request, scan_response
from proxy64.proto.httpproxy import (
    PROXY_METHODS,
    ConnectTarget,
    ForwardTarget,
    LocalAnswer,
    check_proxy_auth,
    classify,
    error_response,
    head_size,
)
from tests.helpers.http_heads import head


def request(method: str, target: str, *headers: tuple[str, str]) -> h11.Request:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: ignored.example",
        *(f"{k}: {v}" for k, v in headers),
    ]
    return head(("\r\n".join(lines) + "\r\n\r\n").encode())


def header_values(req: h11.Request, name: bytes) -> list[bytes]:
    return [v for k, v in req.headers.raw_items() if k.lower() == name]


# --- request-target classification (RFC 9112 §3.2) ---------------------------------------

CONNECT_CASES = [
    ("example.com:443", Destination("example.com", 443)),
    ("EXAMPLE.com.:8443", Destination("example.com", 8443)),
    ("192.0.2.1:80", Destination(IPv4Address("192.0.2.1"), 80)),
    ("[2001:db8::1]:443", Destination(IPv6Address("2001:db8::1"), 443)),
    ("under_score.example:1", Destination("under_score.example", 1)),
    ("[::ffff:192.0.2.7]:443", Destination(IPv4Address("192.0.2.7"), 443)),
]


@pytest.mark.parametrize(("target", "expected"), CONNECT_CASES)
def test_rfc9110_9_3_6_connect_authority_form(target: str, expected: Destination) -> None:
    result = classify(request("CONNECT", target))
    assert result == ConnectTarget(expected)


FORWARD_CASES = [
    ("http://example.com/a/b?c=d", Destination("example.com", 80), b"/a/b?c=d", b"example.com"),
    ("HTTP://Example.COM", Destination("example.com", 80), b"/", b"Example.COM"),
    ("http://example.com?q=1", Destination("example.com", 80), b"/?q=1", b"example.com"),
    ("http://example.com:8080/x", Destination("example.com", 8080), b"/x", b"example.com:8080"),
    ("http://example.com:/x", Destination("example.com", 80), b"/x", b"example.com"),
    ("http://10.1.2.3:81/", Destination(IPv4Address("10.1.2.3"), 81), b"/", b"10.1.2.3:81"),
    ("http://[::1]:8000/p", Destination(IPv6Address("::1"), 8000), b"/p", b"[::1]:8000"),
    ("http://[2001:db8::5]/", Destination(IPv6Address("2001:db8::5"), 80), b"/", b"[2001:db8::5]"),
    ("http://e.com:80/", Destination("e.com", 80), b"/", b"e.com:80"),
]


@pytest.mark.parametrize(("target", "dest", "path", "host"), FORWARD_CASES)
def test_rfc9112_3_2_2_absolute_form_becomes_origin_form(
    target: str, dest: Destination, path: bytes, host: bytes
) -> None:
    result = classify(request("GET", target))
    assert isinstance(result, ForwardTarget)
    assert result.destination == dest
    assert result.request.target == path
    assert result.request.method == b"GET"
    # RFC 9112 §3.2.2: the received Host is replaced by the target's authority.
    assert header_values(result.request, b"host") == [host]


def test_rfc9112_3_2_4_options_with_empty_path_becomes_asterisk() -> None:
    result = classify(request("OPTIONS", "http://example.com"))
    assert isinstance(result, ForwardTarget)
    assert result.request.target == b"*"
    assert classify(request("OPTIONS", "http://example.com/x")).request.target == b"/x"  # type: ignore[union-attr]


BAD_TARGETS = [
    ("GET", "/index.html", "this is a proxy"),
    ("GET", "*", "this is a proxy"),
    ("GET", "https://example.com/", "https:// URLs are not forwarded"),
    ("GET", "ftp://example.com/", "scheme 'ftp'"),
    ("GET", "http:///path", "host is missing"),
    ("GET", "http://:80/", "host is missing"),
    ("GET", "http://user:pw@example.com/", "credentials inside the URI"),
    ("GET", "http://example.com:0/", "not a port"),
    ("GET", "http://example.com:65536/", "not a port"),
    ("GET", "http://example.com:8x/", "not a port"),
    ("GET", "http://[::1/", "closing ']'"),
    ("GET", "http://[nothex]/", "not an IPv6 address"),
    ("GET", "http://[::1]x/", "after ']'"),
    ("GET", "http://exa$mple.com/", "not a host name"),
    ("GET", "http://-bad-.com/", "not a host name"),
    ("GET", "http://999.1.1.1/", "not an IPv4 address"),
    ("CONNECT", "example.com", "needs host:port"),
    ("CONNECT", "example.com:", "needs host:port"),
    ("CONNECT", "http://example.com:443", "not a URL"),
    ("CONNECT", "example.com:99999", "not a port"),
]


@pytest.mark.parametrize(("method", "target", "said"), BAD_TARGETS)
def test_bad_targets_are_400_with_a_reason(method: str, target: str, said: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        classify(request(method, target))
    assert info.value.http_status == 400
    assert said in str(info.value)


# --- hop-by-hop headers (RFC 9110 §7.6.1) and Via (§7.6.3) -------------------------------


def test_rfc9110_7_6_1_hop_by_hop_and_connection_named_headers_removed() -> None:
    result = classify(
        request(
            "POST",
            "http://example.com/",
            ("Connection", "keep-alive, X-Secret , x-other"),
            ("Proxy-Connection", "X-Also"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Secret", "1"),
            ("X-OTHER", "2"),
            ("X-Also", "3"),
            ("Accept", "*/*"),
            ("X-Kept", "a"),
            ("X-Kept", "b"),
            ("Content-Length", "0"),
        )
    )
    assert isinstance(result, ForwardTarget)
    names = [k for k, _ in result.request.headers.raw_items()]
    assert names == [b"Host", b"Accept", b"X-Kept", b"X-Kept", b"Content-Length", b"Via"]
    assert header_values(result.request, b"x-kept") == [b"a", b"b"]
    assert header_values(result.request, b"via") == [b"1.1 proxy64"]


def test_chunked_request_keeps_chunked_framing_upstream() -> None:
    result = classify(request("PUT", "http://example.com/u", ("Transfer-Encoding", "chunked")))
    assert isinstance(result, ForwardTarget)
    assert header_values(result.request, b"transfer-encoding") == [b"chunked"]


def test_expect_100_continue_answered_by_proxy_not_forwarded() -> None:
    result = classify(
        request("POST", "http://e.com/", ("Expect", "100-continue"), ("Content-Length", "5"))
    )
    assert isinstance(result, ForwardTarget)
    assert result.expects_continue
    assert header_values(result.request, b"expect") == []


def test_rfc9110_7_6_3_via_appended_with_received_protocol() -> None:
    raw = b"GET http://e.com/ HTTP/1.0\r\nVia: 1.1 first\r\n\r\n"
    result = classify(head(raw))
    assert isinstance(result, ForwardTarget)
    assert header_values(result.request, b"via") == [b"1.1 first", b"1.0 proxy64"]


def test_response_headers_lose_hop_by_hop_and_gain_via() -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Set-Cookie", b"a=1"),
    ]
    assert scan_response(b"GET", 200, headers, b"1.1").forwarded == [
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
        (b"Via", b"1.1 proxy64"),
    ]


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
HEADER_NAME = st.one_of(
    TOKEN,
    st.sampled_from(sorted(HOP_BY_HOP)),
    st.sampled_from(sorted(HOP_BY_HOP)).map(bytes.upper),
)
HEADER = st.tuples(HEADER_NAME, st.binary(max_size=20).map(lambda b: b.replace(b",", b";")))


@settings(max_examples=300)
@given(st.lists(HEADER, max_size=15), st.lists(TOKEN, max_size=4))
@example(headers=[(b"a", b""), (b"connection", b"A")], named=[])
def test_hypothesis_hop_by_hop_never_leaks_and_order_is_kept(
    headers: list[tuple[bytes, bytes]], named: list[bytes]
) -> None:
    if named:
        headers = [*headers, (b"Connection", b", ".join(named))]
    # RFC 9110 §7.6.1: every option any Connection field lists (a generated Connection or
    # Proxy-Connection header's own value counts too: b"A" names the field "a").
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() in (b"connection", b"proxy-connection")
        for token in value.split(b",")
    }
    dropped = HOP_BY_HOP | {n.lower() for n in named} | (listed - {b""})
    scan = scan_request(headers)
    assert all(name.lower() not in dropped for name, _ in scan.kept)
    # The kept headers are exactly the end-to-end ones (Host and Expect aside), in order.
    end_to_end = [(n, v) for n, v in headers if n.lower() not in dropped]
    assert scan.kept == [(n, v) for n, v in end_to_end if n.lower() not in (b"host", b"expect")]
    upstream = scan.upstream_headers(b"h.example", b"1.1")
    assert upstream[0] == (b"Host", b"h.example")
    assert upstream[-1] == (b"Via", b"1.1 proxy64")
    middle = [h for h in upstream[1:-1] if h != (b"Transfer-Encoding", b"chunked")]
    assert middle == scan.kept


# --- Proxy-Authorization Basic (RFC 7617, RFC 9110 §11.7.2) ------------------------------

CREDS = {"alice": "s3cret:with:colons", "bob": "pw"}


def basic(user: str, password: str) -> list[tuple[bytes, bytes]]:
    token = base64.b64encode(f"{user}:{password}".encode())
    return [(b"Proxy-Authorization", b"Basic " + token)]


@pytest.mark.parametrize(
    "headers",
    [
        basic("alice", "s3cret:with:colons"),
        basic("bob", "pw"),
        [(b"proxy-authorization", b"basic Ym9iOnB3")],
    ],
)
def test_basic_auth_accepted(headers: list[tuple[bytes, bytes]]) -> None:
    check_proxy_auth(headers, CREDS)


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ([], "send Proxy-Authorization: Basic"),
        (basic("alice", "wrong"), "wrong user name or password"),
        (basic("carol", "pw"), "wrong user name or password"),
        (basic("bob", ""), "wrong user name or password"),
        ([(b"Proxy-Authorization", b"Digest abc")], "only the Basic scheme"),
        ([(b"Proxy-Authorization", b"Basic !!!")], "not base64"),
        ([(b"Proxy-Authorization", b"Basic " + base64.b64encode(b"nocolon"))], "user:password"),
    ],
)
def test_basic_auth_refused_with_407(headers: list[tuple[bytes, bytes]], said: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_proxy_auth(headers, CREDS)
    assert info.value.http_status == 407
    assert said in str(info.value)


def test_no_credentials_configured_accepts_anything() -> None:
    check_proxy_auth([], None)


# --- error answers -----------------------------------------------------------------------


def render(status: int, message: str) -> bytes:
    conn = h11.Connection(h11.SERVER)
    response, body = error_response(status, message)
    return conn.send(response) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, b"Bad Request"),
        (403, b"Forbidden"),
        (431, b"Request Header Fields Too Large"),
        (502, b"Bad Gateway"),
        (503, b"Service Unavailable"),
        (504, b"Gateway Timeout"),
    ],
)
def test_error_response_is_complete_http(status: int, reason: bytes) -> None:
    wire = render(status, "cannot connect to x:1: connection refused")
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.receive_data(wire)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert response.status_code == status and response.reason == reason
    assert (b"connection", b"close") in list(response.headers)
    data = client.next_event()
    assert isinstance(data, h11.Data)
    assert b"connection refused" in data.data and data.data.startswith(b"proxy64: ")
    assert isinstance(client.next_event(), h11.EndOfMessage)


def test_407_carries_proxy_authenticate_basic_realm() -> None:
    wire = render(407, "proxy authentication required")
    assert b'\r\nProxy-Authenticate: Basic realm="proxy64"\r\n' in wire
    assert wire.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")


# --- fuzz: request heads through h11 and the classifier ----------------------------------

HEAD_PIECES = st.sampled_from(
    [
        b"GET ",
        b"CONNECT ",
        b"POST ",
        b"http://",
        b"https://",
        b"[",
        b"]",
        b":",
        b"/",
        b"@",
        b"example.com",
        b"::1",
        b"127.0.0.1",
        b"80",
        b"99999",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b" HTTP/0.9\r\n",
        b" HTTP/2.0\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Host: a\r\n",
        b"Connection: x\r\n",
        b"Proxy-Authorization: Basic YTpi\r\n",
        b"\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 3\r\n",
        b"?",
        b"#",
        b"%",
    ]
)


def classify_bytes(raw: bytes, credentials: dict[str, str] | None) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=4096)
    conn.receive_data(raw)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        assert exc.error_status_hint in (400, 431, 501)
        return
    if isinstance(event, h11.Request):
        try:
            classify(event)
            check_proxy_auth(list(event.headers.raw_items()), credentials)
        except RemoteProtocolError as exc:
            assert exc.http_status in (400, 407, 431, 505)


@settings(max_examples=500)
@given(st.lists(HEAD_PIECES, max_size=30).map(b"".join), st.booleans())
def test_fuzz_structured_heads_only_declared_errors(raw: bytes, with_auth: bool) -> None:
    classify_bytes(raw + b"\r\n\r\n", {"a": "b"} if with_auth else None)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_only_declared_errors(raw: bytes) -> None:
    classify_bytes(raw, None)


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60))
def test_fuzz_targets_only_declared_errors(target: str) -> None:
    for method in ("GET", "CONNECT"):
        classify_bytes(f"{method} {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode(), None)


def test_trickle_one_byte_at_a_time_gives_the_same_target() -> None:
    raw = b"GET http://example.com:81/x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n"
    conn = h11.Connection(h11.SERVER)
    event: object = h11.NEED_DATA
    for i in range(len(raw)):
        conn.receive_data(raw[i : i + 1])
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            break
    assert isinstance(event, h11.Request)
    assert classify(event) == classify(head(raw))


# --- head size (431), retry eligibility ---------------------------------------------------


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(TOKEN, st.text(alphabet="abc xyz=;", max_size=30).map(str.strip)), max_size=10
    ),
    st.text(alphabet="abcdef/?=&", max_size=40),
)
def test_head_size_is_the_size_on_the_wire(headers: list[tuple[bytes, str]], path: str) -> None:
    lines = [f"GET http://e.com/{path} HTTP/1.1", "Host: e.com"]
    lines += [f"{name.decode()}: {value}" for name, value in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    request = head(raw)
    assert head_size(request, scan_request(request.headers.raw_items())) == len(raw)


def test_head_over_the_limit_is_431_even_when_it_arrived_whole() -> None:
    raw = b"GET http://e.com/ HTTP/1.1\r\nHost: e.com\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    classify(head(raw), max_head=len(raw))
    with pytest.raises(RemoteProtocolError) as info:
        classify(head(raw), max_head=len(raw) - 1)
    assert info.value.http_status == 431


@pytest.mark.parametrize(
    ("method", "headers", "retryable"),
    [
        ("GET", (), True),
        ("HEAD", (), True),
        ("DELETE", (("Content-Length", "0"),), True),
        ("GET", (("Content-Length", "3"),), False),
        ("PUT", (("Transfer-Encoding", "chunked"),), False),
        ("POST", (), False),
        ("PATCH", (), False),
    ],
)
def test_rfc9110_9_2_2_only_idempotent_requests_without_content_retryable(
    method: str, headers: tuple[tuple[str, str], ...], retryable: bool
) -> None:
    result = classify(request(method, "http://e.com/", *headers))
    assert isinstance(result, ForwardTarget)
    assert result.retryable is retryable


# --- Max-Forwards (RFC 9110 §7.6.2) ------------------------------------------------------


def test_rfc9110_7_6_2_options_max_forwards_zero_answered_by_proxy() -> None:
    result = classify(request("OPTIONS", "http://e.com/", ("Max-Forwards", "0")))
    assert isinstance(result, LocalAnswer)
    assert result.response.status_code == 200
    assert (b"allow", PROXY_METHODS) in list(result.response.headers)
    assert result.body == b""


def test_rfc9110_9_3_8_trace_echo_hides_credentials() -> None:
    result = classify(
        request(
            "TRACE",
            "http://e.com/t",
            ("Max-Forwards", "0"),
            ("Proxy-Authorization", "Basic YTpi"),
            ("Cookie", "s=1"),
            ("X-Seen", "yes"),
        )
    )
    assert isinstance(result, LocalAnswer)
    assert result.body.startswith(b"TRACE http://e.com/t HTTP/1.1\r\n")
    assert b"X-Seen: yes\r\n" in result.body and result.body.endswith(b"\r\n\r\n")
    assert b"YTpi" not in result.body and b"s=1" not in result.body
    assert (b"content-type", b"message/http") in list(result.response.headers)


@pytest.mark.parametrize(
    ("method", "received", "sent"),
    [
        ("OPTIONS", "5", b"4"),
        ("TRACE", "1", b"0"),
        ("GET", "0", b"0"),
        ("OPTIONS", None, None),
    ],
)
def test_rfc9110_7_6_2_max_forwards_decremented_only_for_options_and_trace(
    method: str, received: str | None, sent: bytes | None
) -> None:
    headers = [("Max-Forwards", received)] if received is not None else []
    result = classify(request(method, "http://e.com/", *headers))
    assert isinstance(result, ForwardTarget)
    assert header_values(result.request, b"max-forwards") == ([sent] if sent else [])


def test_max_forwards_not_a_number_is_400() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        classify(request("OPTIONS", "http://e.com/", ("Max-Forwards", "x1")))
    assert info.value.http_status == 400


# --- RFC 9112 §6.3: Transfer-Encoding with Content-Length ----------------------------------


def test_rfc9112_6_3_request_with_both_framings_is_400() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        classify(
            request(
                "POST",
                "http://e.com/",
                ("Content-Length", "3"),
                ("Transfer-Encoding", "chunked"),
            )
        )
    assert info.value.http_status == 400
    assert "both Transfer-Encoding and Content-Length" in str(info.value)


def test_rfc9112_6_3_response_content_length_dropped_when_chunked() -> None:
    headers = [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked"), (b"X", b"1")]
    forwarded = scan_response(b"GET", 200, headers, b"1.1").forwarded
    assert forwarded == [(b"X", b"1"), (b"Via", b"1.1 proxy64")]
