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


def connection_options(headers: Iterable[Header]) -> frozenset[bytes]:
    """The header names listed in Connection (and Proxy-Connection), lower-cased."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() in (b"connection", b"proxy-connection"):
            for raw in value.split(b","):
                token = raw.strip().lower()
                if token:
                    named.add(token)
    return frozenset(named)


def end_to_end(headers: Sequence[Header]) -> list[Header]:
    """The headers a proxy may forward: hop-by-hop ones and those Connection names removed.

    RFC 9110 §7.6.1: "a proxy or gateway MUST parse a received Connection header field
    before a message is forwarded and, for each connection-option in this field, remove any
    header or trailer field(s) from the message with the same name".
    """
    drop = HOP_BY_HOP | connection_options(headers)
    return [(name, value) for name, value in headers if name.lower() not in drop]


def is_chunked(headers: Iterable[Header]) -> bool:
    """Whether the message body was framed with chunked transfer coding (RFC 9112 §7.1)."""
    for name, value in headers:
        if name.lower() == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if codings and codings[-1] == b"chunked":
                return True
    return False


def has_content(headers: Iterable[Header]) -> bool:
    """Whether a request carries content: chunked, or a Content-Length other than 0."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (
            lowered == b"content-length" and value.strip() != b"0"
        ):
            return True
    return False


def expects_continue(headers: Iterable[Header]) -> bool:
    """RFC 9110 §10.1.1: the client waits for 100 (Continue) before sending content."""
    return any(
        name.lower() == b"expect" and value.strip().lower() == b"100-continue"
        for name, value in headers
    )


def via_entry(http_version: bytes) -> Header:
    """RFC 9110 §7.6.3: received-protocol (version only for HTTP) and received-by."""
    return (b"Via", http_version + b" " + VIA_PSEUDONYM)


def upstream_request_headers(
    headers: Sequence[Header], host: bytes, http_version: bytes
) -> list[Header]:
    """Headers for the origin-form request sent upstream.

    Host is replaced by the request target's authority: RFC 9112 §3.2.2 "When a proxy
    receives a request with an absolute-form of request-target, the proxy MUST ignore the
    received Host header field (if any) and instead replace it with the host information
    of the request-target." Expect: 100-continue is answered by proxy64 itself (RFC 9110
    §10.1.1 allows a proxy to respond 100 immediately), so it is not forwarded.
    """
    kept = [
        (name, value)
        for name, value in end_to_end(headers)
        if name.lower() not in (b"host", b"expect")
    ]
    out: list[Header] = [(b"Host", host), *kept]
    if is_chunked(headers):
        out.append((b"Transfer-Encoding", b"chunked"))  # h11 frames the body again
    out.append(via_entry(http_version))
    return out


def downstream_response_headers(headers: Sequence[Header], http_version: bytes) -> list[Header]:
    """Headers of an origin's response sent back to the client.

    Transfer-Encoding is left out: h11 chooses the framing towards the client (chunked for
    an HTTP/1.1 client, close-delimited for HTTP/1.0) when no Content-Length is present.
    """
    kept = end_to_end(headers)
    if is_chunked(headers):
        # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which an intermediary
        # MUST remove before forwarding (else the two framings could disagree downstream).
        kept = [(n, v) for n, v in kept if n.lower() != b"content-length"]
    return [*kept, via_entry(http_version)]


def keeps_alive(headers: Iterable[Header], http_version: bytes) -> bool:
    """Whether a message lets its connection persist (RFC 9112 §9.3): HTTP/1.1 and no
    "close" option in Connection. The same rule h11 applies, for the cycles whose body
    framing proxy64 handles itself (h11 only sees their heads)."""
    if http_version < b"1.1":
        return False
    return b"close" not in {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }


# The largest Content-Length proxy64 passes on: what a signed 64-bit integer holds, the
# limit of common HTTP implementations (RFC 9110 §8.6 asks recipients to anticipate large
# values and to prevent parsing errors caused by integer overflow).
MAX_CONTENT_LENGTH = 2**63 - 1


def oversized_content_length(headers: Iterable[Header]) -> bytes | None:
    """A Content-Length value larger than MAX_CONTENT_LENGTH (RFC 9110 §8.6), else None."""
    for name, value in headers:
        if name.lower() == b"content-length":
            for part in value.split(b","):
                text = part.strip()
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


def response_body_length(
    request_method: bytes, status_code: int, headers: Iterable[Header]
) -> int | None:
    """The length of a response body framed by Content-Length, else None (RFC 9112 §6.3
    rules 1 and 6): a HEAD response, 1xx, 204 and 304 have no body whatever they declare."""
    if request_method == b"HEAD" or status_code < 200 or status_code in (204, 304):
        return None
    return fixed_body_length(headers)
