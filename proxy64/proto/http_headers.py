# Header rewriting for a forwarding HTTP/1.1 proxy (pure: header lists in, header lists out).
#
# Invariants: no hop-by-hop header ever leaves (RFC 9110 §7.6.1: Connection, every header
# it names, Proxy-Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, and the
# proxy's own Proxy-Authorization / Proxy-Authenticate); every end-to-end header is kept,
# in its original order and spelling. Message framing is h11's job: Content-Length is
# end-to-end and kept, chunked Transfer-Encoding is re-declared only where h11 needs it.
# Via is appended (RFC 9110 §7.6.3); Host is set from the request target (RFC 9112 §3.2.2).

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

Header = tuple[bytes, bytes]

VIA_PSEUDONYM = b"proxy64"  # RFC 9110 §7.6.3 received-by as a pseudonym, no host name leak

# RFC 9110 §7.6.1 (Connection, TE, Transfer-Encoding via RFC 9112 §6.1, Upgrade, Trailer
# is listed with the hop-by-hop fields in RFC 2616 §13.5.1) plus the de-facto
# Proxy-Connection and Keep-Alive, and the proxy authentication fields addressed to us
# (RFC 9110 §11.7.1, §11.7.2).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)


def _add_options(named: set[bytes], value: bytes) -> None:
    """The connection-options of one Connection (or Proxy-Connection) line, lower-cased,
    into named. RFC 9110 §7.6.1: "a proxy or gateway MUST parse a received Connection
    header field before a message is forwarded and, for each connection-option in this
    field, remove any header or trailer field(s) from the message with the same name"."""
    for raw in value.lower().split(b","):
        token = raw.strip()
        if token:
            named.add(token)


def _last_coding_chunked(value: bytes) -> bool:
    """Whether the last transfer coding of one Transfer-Encoding line is chunked."""
    return value.rpartition(b",")[2].strip().lower() == b"chunked"


def has_content(headers: Iterable[Header]) -> bool:
    """Whether a request carries content: chunked, or a Content-Length other than 0."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (
            lowered == b"content-length" and value.strip() != b"0"
        ):
            return True
    return False


def via_entry(http_version: bytes) -> Header:
    """RFC 9110 §7.6.3: received-protocol (version only for HTTP) and received-by."""
    return (b"Via", http_version + b" " + VIA_PSEUDONYM)


# The request fields scan_request() looks at; every other field is end-to-end and kept.
_REQUEST_FIELDS = HOP_BY_HOP | {b"host", b"expect", b"content-length", b"max-forwards"}
_OPTION_FIELDS = (b"connection", b"proxy-connection")


class RequestScan(NamedTuple):
    """What a proxy needs from a request's header lines, gathered in one pass over them
    (a test holds each field to its plain definition, one pass per question)."""

    size: int  # the header lines on the wire: name, ": ", value and CRLF each
    oversized: bytes | None  # a Content-Length beyond MAX_CONTENT_LENGTH (RFC 9110 §8.6)
    both_framings: bool  # Transfer-Encoding and Content-Length both present
    content: bool  # has_content()
    continue_expected: bool  # Expect: 100-continue (RFC 9110 §10.1.1)
    chunked: bool  # the last transfer coding of a Transfer-Encoding is chunked (RFC 9112 §7.1)
    max_forwards: bytes | None  # the first Max-Forwards value, stripped
    # the end-to-end fields (hop-by-hop ones and those Connection names removed), without
    # Host and Expect, in order
    kept: list[Header]

    def upstream_headers(self, host: bytes, http_version: bytes) -> list[Header]:
        """Headers for the origin-form request sent upstream.

        Host is replaced by the request target's authority: RFC 9112 §3.2.2 "When a proxy
        receives a request with an absolute-form of request-target, the proxy MUST ignore
        the received Host header field (if any) and instead replace it with the host
        information of the request-target." Expect: 100-continue is answered by proxy64
        itself (RFC 9110 §10.1.1 allows a proxy to respond 100 immediately), so it is not
        forwarded."""
        if self.chunked:  # h11 frames the body again
            return [(b"Host", host), *self.kept, _CHUNKED, via_entry(http_version)]
        return [(b"Host", host), *self.kept, via_entry(http_version)]


_CHUNKED: Header = (b"Transfer-Encoding", b"chunked")


def scan_request(headers: Iterable[Header]) -> RequestScan:
    """One pass over a request's header lines: see RequestScan."""
    size = 0
    kept: list[Header] = []
    oversized: bytes | None = None
    max_forwards: bytes | None = None
    options: set[bytes] = set()
    length_seen = coding_seen = content = continue_expected = chunked = False
    for name, value in headers:
        size += len(name) + len(value) + 4
        lowered = name.lower()
        if lowered not in _REQUEST_FIELDS:
            kept.append((name, value))
        elif lowered == b"content-length":
            length_seen = True
            if oversized is None:
                oversized = _oversized_length(value)
            content = content or value.strip() != b"0"
            kept.append((name, value))
        elif lowered == b"max-forwards":
            if max_forwards is None:
                max_forwards = value.strip()
            kept.append((name, value))
        elif lowered == b"transfer-encoding":
            coding_seen = content = True
            chunked = chunked or _last_coding_chunked(value)
        elif lowered == b"expect":
            continue_expected = continue_expected or value.strip().lower() == b"100-continue"
        elif lowered in _OPTION_FIELDS:
            _add_options(options, value)
        # Host and the other hop-by-hop fields are not forwarded.
    if options:
        kept = [(name, value) for name, value in kept if name.lower() not in options]
    both = length_seen and coding_seen
    return RequestScan(
        size, oversized, both, content, continue_expected, chunked, max_forwards, kept
    )


class ResponseScan(NamedTuple):
    """What the exchange needs from an origin's response head, gathered in one pass over
    its header lines (a test holds each field to its plain definition, one pass per
    question)."""

    oversized: bytes | None  # a Content-Length beyond MAX_CONTENT_LENGTH (RFC 9110 §8.6)
    # the body's length when Content-Length frames it (RFC 9112 §6.3 rules 1 and 6: none
    # for HEAD, 1xx, 204 and 304, whatever they declare; none under Transfer-Encoding,
    # rule 3, or without a valid Content-Length)
    body_length: int | None
    keeps_alive: bool  # keeps_alive()
    # the headers sent back to the client: the end-to-end fields in order and spelling,
    # Via appended. Transfer-Encoding is left out: h11 chooses the framing towards the
    # client (chunked for an HTTP/1.1 client, close-delimited for HTTP/1.0) when no
    # Content-Length is present.
    forwarded: list[Header]


def scan_response(
    request_method: bytes, status_code: int, headers: Iterable[Header], http_version: bytes
) -> ResponseScan:
    """One pass over a response's header lines: see ResponseScan."""
    # The end-to-end fields are kept with their lower-cased names; the names Connection
    # lists (rare) and Content-Length under chunked are dropped after the pass.
    kept: list[tuple[bytes, Header]] = []
    options: set[bytes] = set()
    oversized: bytes | None = None
    length: int | None = None
    length_valid = True  # the first Content-Length is digits (else no length framing)
    coding_seen = chunked = close = False
    for name, value in headers:
        lowered = name.lower()
        if lowered not in HOP_BY_HOP:
            kept.append((lowered, (name, value)))
            if lowered == b"content-length":
                if oversized is None:
                    oversized = _oversized_length(value)
                if length is None and length_valid:
                    text = value.strip()
                    if text.isdigit() and text.isascii():
                        length = int(text)
                    else:
                        length_valid = False
        elif lowered == b"transfer-encoding":
            coding_seen = True
            chunked = chunked or _last_coding_chunked(value)
        elif lowered in _OPTION_FIELDS:
            _add_options(options, value)
            if lowered == b"connection" and not close:
                close = _names_close(value)
    if chunked:
        # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which an intermediary
        # MUST remove before forwarding (else the two framings could disagree downstream).
        options.add(b"content-length")
    if options:
        forwarded = [header for lowered, header in kept if lowered not in options]
    else:
        forwarded = [header for _, header in kept]
    forwarded.append(via_entry(http_version))
    bodiless = request_method == b"HEAD" or status_code < 200 or status_code in (204, 304)
    if bodiless or coding_seen or not length_valid:
        length = None
    alive = http_version >= b"1.1" and not close
    return ResponseScan(oversized, length, alive, forwarded)


def _names_close(value: bytes) -> bool:
    """Whether one Connection line lists the "close" option (RFC 9112 §9.6)."""
    lowered = value.lower()
    return b"close" in lowered and any(t.strip() == b"close" for t in lowered.split(b","))


def keeps_alive(headers: Iterable[Header], http_version: bytes) -> bool:
    """Whether a message lets its connection persist (RFC 9112 §9.3): HTTP/1.1 and no
    "close" option in Connection. The same rule h11 applies, for the cycles whose body
    framing proxy64 handles itself (h11 only sees their heads)."""
    if http_version < b"1.1":
        return False
    return not any(name.lower() == b"connection" and _names_close(value) for name, value in headers)


# The largest Content-Length proxy64 passes on: what a signed 64-bit integer holds, the
# limit of common HTTP implementations (RFC 9110 §8.6 asks recipients to anticipate large
# values and to prevent parsing errors caused by integer overflow).
MAX_CONTENT_LENGTH = 2**63 - 1


def _oversized_length(value: bytes) -> bytes | None:
    """The first part of one Content-Length line above MAX_CONTENT_LENGTH, else None."""
    for part in value.split(b","):
        text = part.strip()
        if len(text) < 19:  # below 10**18: never above the limit
            continue
        significant = text.lstrip(b"0")
        # more significant digits than 2**63 - 1 has (19), or a value above it
        if text.isdigit() and (
            len(significant) > 19 or int(significant or b"0") > MAX_CONTENT_LENGTH
        ):
            return text
    return None


def fixed_body_length(headers: Iterable[Header]) -> int | None:
    """The Content-Length of a message framed by it (RFC 9112 §6.3 rule 6), else None:
    None when Transfer-Encoding is present (it overrides Content-Length, §6.3 rule 3) or
    when no valid Content-Length is there. Meant for heads h11 has already validated."""
    length: int | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return None
        if lowered == b"content-length" and length is None:
            text = value.strip()
            if not text.isdigit() or not text.isascii():
                return None
            length = int(text)
    return length


def request_body_length(headers: Sequence[Header]) -> int | None:
    """The length of a request body framed by Content-Length, or by neither framing field
    (RFC 9112 §6.3 rule 7: then the body has length zero); None for a chunked body or
    no valid Content-Length. For heads h11 has already validated."""
    for name, _ in headers:
        if name.lower() in _FRAMING_FIELDS:
            return fixed_body_length(headers)
    return 0


_FRAMING_FIELDS = (b"content-length", b"transfer-encoding")
