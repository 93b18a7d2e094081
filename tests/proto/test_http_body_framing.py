"""keeps_alive / fixed_body_length / a response's body length (scan_response): the rules
proxy64 applies itself for the cycles whose bodies bypass h11 (RFC 9112 §6.3, §9.3), checked against
tables and against h11's own decisions."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.proto.http_headers import (
    fixed_body_length,
    keeps_alive,
    request_body_length,
    scan_response,
)


@pytest.mark.parametrize(
    ("headers", "version", "expected"),
    [
        ([], b"1.1", True),
        ([(b"Connection", b"close")], b"1.1", False),
        ([(b"connection", b"Keep-Alive, CLOSE")], b"1.1", False),
        ([(b"Connection", b"keep-alive")], b"1.0", False),
        ([(b"Proxy-Connection", b"close")], b"1.1", True),  # h11 reads Connection only
        ([(b"Connection", b"upgrade")], b"1.1", True),
    ],
)
def test_rfc9112_9_3_keeps_alive_table(
    headers: list[tuple[bytes, bytes]], version: bytes, expected: bool
) -> None:
    assert keeps_alive(headers, version) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"Content-Length", b"0")], 0),
        ([(b"content-length", b"1048576")], 1048576),
        ([(b"Content-Length", b"12"), (b"Transfer-Encoding", b"chunked")], None),
        ([(b"Transfer-Encoding", b"chunked")], None),
        ([], None),
        ([(b"Content-Length", b"-1")], None),
        ([(b"Content-Length", "\u0663".encode())], None),  # not an ASCII digit
    ],
)
def test_rfc9112_6_3_fixed_body_length_table(
    headers: list[tuple[bytes, bytes]], expected: int | None
) -> None:
    assert fixed_body_length(headers) == expected


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        (b"GET", 200, 5),
        (b"HEAD", 200, None),
        (b"GET", 204, None),
        (b"GET", 304, None),
        (b"GET", 101, None),
        (b"POST", 404, 5),
    ],
)
def test_rfc9112_6_3_response_without_body(
    method: bytes, status: int, expected: int | None
) -> None:
    scan = scan_response(method, status, [(b"Content-Length", b"5")], b"1.1")
    assert scan.body_length == expected


_header = st.tuples(
    st.sampled_from([b"Connection", b"content-length", b"Transfer-Encoding", b"X-A"]),
    st.binary(max_size=12),
)


@given(st.lists(_header, max_size=6), st.sampled_from([b"1.0", b"1.1"]))
def test_fuzz_never_raise(headers: list[tuple[bytes, bytes]], version: bytes) -> None:
    assert isinstance(keeps_alive(headers, version), bool)
    length = fixed_body_length(headers)
    assert length is None or length >= 0


@given(
    st.sampled_from(["close", "keep-alive", "close, x", "x", None]),
    st.sampled_from(["1.0", "1.1"]),
    st.integers(min_value=0, max_value=64),
    st.booleans(),
)
def test_same_verdicts_as_h11(
    connection: str | None, version: str, length: int, chunked: bool
) -> None:
    """What h11 decides from a response head it parses: framing and persistence."""
    headers = [("Content-Length", str(length))] if not chunked else []
    if chunked and version == "1.1":
        headers = [("Transfer-Encoding", "chunked")]
    if connection is not None:
        headers.append(("Connection", connection))
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    head = "".join(f"{n}: {v}\r\n" for n, v in headers)
    client.receive_data(f"HTTP/{version} 200 OK\r\n{head}\r\n".encode())
    response = client.next_event()
    assert isinstance(response, h11.Response)
    raw = list(response.headers.raw_items())
    scan = scan_response(b"GET", 200, raw, response.http_version)
    framed = scan.body_length
    if chunked or "Content-Length" not in dict(headers):
        assert framed is None
        return
    assert framed == length
    # h11 with the whole body fed: DONE (may persist) or MUST_CLOSE, as keeps_alive says
    client.receive_data(b"\0" * length)
    while (event := client.next_event()) != h11.EndOfMessage():
        assert isinstance(event, h11.Data)
    assert (client.their_state is h11.DONE) is keeps_alive(raw, response.http_version)
    assert scan.keeps_alive is keeps_alive(raw, response.http_version)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], 0),  # RFC 9112 §6.3 rule 7: neither framing field, no body
        ([(b"Host", b"a"), (b"Accept", b"*/*")], 0),
        ([(b"Content-Length", b"0")], 0),
        ([(b"content-length", b"12")], 12),
        ([(b"Transfer-Encoding", b"chunked")], None),
        ([(b"Content-Length", b"12"), (b"Transfer-Encoding", b"chunked")], None),
        ([(b"Content-Length", b"x")], None),
    ],
)
def test_rfc9112_6_3_request_body_length_table(
    headers: list[tuple[bytes, bytes]], expected: int | None
) -> None:
    assert request_body_length(headers) == expected


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"X-A", b"Accept"]),
            st.sampled_from([b"0", b"3", b"17", b"chunked", b"gzip, chunked", b"x"]),
        ),
        max_size=3,
    ),
    st.sampled_from([b"1.0", b"1.1"]),
)
def test_request_body_length_is_h11s_framing(
    fields: list[tuple[bytes, bytes]], version: bytes
) -> None:
    """A length is given only where h11, reading the same head, frames the body by that
    length: its end of message after exactly that many bytes."""
    lines = b"".join(b"%s: %s\r\n" % field for field in fields)
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"POST /p HTTP/%s\r\nHost: a\r\n%s\r\n" % (version, lines))
    try:
        request = server.next_event()
    except h11.RemoteProtocolError:
        return  # h11 refuses the head: nothing is forwarded
    assert isinstance(request, h11.Request)
    length = request_body_length(request.headers.raw_items())
    if length is None:
        return  # chunked or invalid: h11 carries (or refuses) the body
    server.receive_data(b"b" * length)
    received = 0
    while (event := server.next_event()) != h11.EndOfMessage():
        assert isinstance(event, h11.Data), event
        received += len(event.data)
    assert received == length
