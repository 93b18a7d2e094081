"""Where a proxy must be strict about a request head (RFC 9110 §8.6, §15.6.6; RFC 9112
§2.3): a Content-Length beyond a 63-bit integer is 400, never forwarded; a CONNECT in a
version other than HTTP/1.0 or 1.1 is 505, and so is any request of a major version
other than 1. Table tests and hypothesis invariants over h11-parsed heads."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.errors import RemoteProtocolError
from proxy64.proto.http_headers import MAX_CONTENT_LENGTH, scan_request
from proxy64.proto.httpproxy import ConnectTarget, ForwardTarget, classify, error_response
from tests.helpers.http_heads import head


def post_with_length(value: str) -> h11.Request:
    return head(
        b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
        b"Content-Length: " + value.encode() + b"\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("0", False),
        (str(MAX_CONTENT_LENGTH), False),
        (str(MAX_CONTENT_LENGTH + 1), True),
        ("99999999999999999999", True),
        ("00000000000000000001", False),  # leading zeros: the value counts
        ("18446744073709551616", True),  # 2**64
    ],
)
def test_rfc9110_8_6_content_length_beyond_63_bits_is_400(value: str, refused: bool) -> None:
    request = post_with_length(value)
    if refused:
        with pytest.raises(RemoteProtocolError) as info:
            classify(request)
        assert info.value.http_status == 400
        assert "larger than a 63-bit integer" in str(info.value)
    else:
        target = classify(request)
        assert isinstance(target, ForwardTarget)
        assert (b"Content-Length", value.encode()) in target.request.headers.raw_items()


@pytest.mark.parametrize(
    ("version", "status"),
    [("1.1", None), ("1.0", None), ("0.9", 505), ("2.0", 505), ("1.2", 505), ("3.0", 505)],
)
def test_rfc9110_15_6_6_connect_other_versions_are_505(version: str, status: int | None) -> None:
    raw = f"CONNECT example.com:443 HTTP/{version}\r\nHost: example.com:443\r\n\r\n"
    request = head(raw.encode())
    if status is None:
        assert isinstance(classify(request), ConnectTarget)
        return
    with pytest.raises(RemoteProtocolError) as info:
        classify(request)
    assert info.value.http_status == status
    assert f"HTTP/{version} is not supported" in str(info.value)


def test_505_answer_is_complete_http() -> None:
    response, body = error_response(505, "HTTP/2.0 is not supported")
    assert response.status_code == 505 and response.reason == b"HTTP Version Not Supported"
    assert body == b"proxy64: HTTP version not supported: HTTP/2.0 is not supported\n"


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**25), st.integers(min_value=0, max_value=5))
def test_hypothesis_content_length_refused_exactly_beyond_63_bits(n: int, zeros: int) -> None:
    """Invariant: a request is refused (400, by h11 for more than 20 digits, else by
    classify) iff its Content-Length exceeds 2**63 - 1; otherwise the value is forwarded
    unchanged."""
    text = "0" * zeros + str(n)
    try:
        request = post_with_length(text)
    except h11.RemoteProtocolError as exc:
        assert len(text) > 20 and exc.error_status_hint == 400  # h11's own digit bound
        return
    too_big = n > MAX_CONTENT_LENGTH
    assert (scan_request(request.headers.raw_items()).oversized is not None) == too_big
    try:
        target = classify(request)
    except RemoteProtocolError as exc:
        assert too_big and exc.http_status == 400
        return
    assert not too_big
    assert isinstance(target, ForwardTarget)
    assert (b"Content-Length", text.encode()) in target.request.headers.raw_items()


@settings(max_examples=200)
@given(
    st.sampled_from(["GET http://example.com/", "CONNECT example.com:443", "POST http://a/"]),
    st.integers(min_value=0, max_value=9),
    st.integers(min_value=0, max_value=9),
)
def test_hypothesis_versions_only_http1_or_505(start: str, major: int, minor: int) -> None:
    """Invariant: classify() either accepts or raises the declared error; a CONNECT is
    accepted only in 1.0/1.1 and any request only with major version 1."""
    raw = f"{start} HTTP/{major}.{minor}\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"
    try:
        request = head(raw.encode())
    except h11.RemoteProtocolError:
        return  # h11 refused the head itself
    version = f"{major}.{minor}"
    try:
        classify(request)
    except RemoteProtocolError as exc:
        assert exc.http_status == 505
        assert version not in ("1.0", "1.1")
        assert start.startswith("CONNECT") or major != 1
        return
    assert major == 1 and (version in ("1.0", "1.1") or not start.startswith("CONNECT"))
