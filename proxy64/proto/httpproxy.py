# What an HTTP proxy request head means, and the answers proxy64 gives (pure, over h11).
#
# h11 does the framing; this module only decides: a CONNECT in authority-form is a tunnel
# to a Destination (RFC 9110 §9.3.6, RFC 9112 §3.2.3); an absolute-form http:// target is a
# request to forward in origin-form (RFC 9112 §3.2.2, §3.2.1); anything else is a
# RemoteProtocolError carrying the HTTP status to answer. Proxy-Authorization Basic is
# checked in constant time (RFC 9110 §11.7.2, RFC 7617). Error answers are real HTTP
# responses with a short plain-text body and Connection: close.
#
# Invariant: classify() and check_proxy_auth() raise RemoteProtocolError and nothing else.

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address

import h11

from proxy64.defaults import HTTP_AUTHORITY_CACHE, HTTP_AUTHORITY_CACHED_MAX, HTTP_MAX_HEAD
from proxy64.destination import Destination, Host
from proxy64.errors import RemoteProtocolError
from proxy64.proto.h11_checked import checked_request
from proxy64.proto.http_headers import Header, RequestScan, scan_request

HTTP_DEFAULT_PORT = 80  # RFC 9110 §4.2.1
# RFC 9110 §9.2.2 idempotent methods (PUT and DELETE too, but they usually carry content).
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
PROXY_REALM = b'Basic realm="proxy64"'  # RFC 7617 §2, sent with 407

# RFC 9112 §2.3: the HTTP/1 versions proxy64 speaks; CONNECT with any other is 505.
HTTP1_VERSIONS = frozenset({b"1.0", b"1.1"})

# RFC 3986 §3.2.2 reg-name, narrowed to what DNS can carry: letters, digits, '-', '_', '.'.
_REG_NAME = re.compile(rb"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
_IPV4 = re.compile(rb"^\d{1,3}(?:\.\d{1,3}){3}$")
_PORT = re.compile(rb"^\d{1,5}$")


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    """CONNECT host:port: open a tunnel (RFC 9110 §9.3.6)."""

    destination: Destination


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """An absolute-form http:// request: send `request` (origin-form) to `destination`."""

    destination: Destination
    request: h11.Request
    expects_continue: bool  # the client waits for 100 (Continue) before its body
    retryable: bool  # idempotent and without content: may be re-sent (RFC 9110 §9.2.2)


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """proxy64 answers as the final recipient: OPTIONS/TRACE with Max-Forwards: 0."""

    response: h11.Response
    body: bytes


Target = ConnectTarget | ForwardTarget | LocalAnswer

# What the OPTIONS answer advertises: every method proxy64 forwards or serves.
PROXY_METHODS = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH, CONNECT"
# Fields a TRACE echo leaves out, as RFC 9110 §9.3.8 asks for sensitive data.
_TRACE_HIDDEN = frozenset({b"proxy-authorization", b"authorization", b"cookie"})


def _bad(message: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(message, http_status=status)


def parse_authority(authority: bytes, default_port: int | None) -> Destination:
    """host[:port] or [IPv6][:port] (RFC 3986 §3.2) → Destination; port required if no default.

    The host is parsed once, straight into what it becomes: the Destination is
    the one Destination.from_text() gives for the same text (a test checks it)."""
    if b"@" in authority:
        # RFC 9110 §4.2.4: userinfo in an http URI is deprecated; treat it as an error.
        raise _bad(
            f"{_shown(authority)!r}: credentials inside the URI are not accepted (RFC 9110 §4.2.4)"
        )
    port_text: bytes | None
    host: Host
    dotted_quad = False
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end < 0:
            raise _bad(f"{_shown(authority)!r}: IPv6 address without closing ']'")
        host_text, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(b":"):
            raise _bad(f"{_shown(authority)!r}: unexpected text after ']'")
        port_text = rest[1:] if rest else None
        try:
            address = IPv6Address(host_text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            shown_host = host_text.decode("ascii", "backslashreplace")
            raise _bad(f"{_shown(authority)!r}: {shown_host!r} is not an IPv6 address") from None
        # ::ffff:a.b.c.d means the IPv4 host, which only NAT64 can reach (as SOCKS does).
        host = address.ipv4_mapped or address
    else:
        host_text, sep, port_part = authority.partition(b":")
        port_text = port_part if sep else None
        if not host_text:
            raise _bad(f"{_shown(authority)!r}: the host is missing")
        dotted_quad = _IPV4.match(host_text) is not None
        if not (dotted_quad or _REG_NAME.match(host_text)):
            raise _bad(f"{_shown(authority)!r}: {_shown(host_text)!r} is not a host name")
        host = host_text.decode("ascii").rstrip(".").lower()
    if not port_text:  # absent, or empty as RFC 3986 §3.2.3 allows
        if default_port is None:
            raise _bad(f"{_shown(authority)!r}: CONNECT needs host:port (RFC 9110 §9.3.6)")
        port = default_port
    elif not _PORT.match(port_text) or not 1 <= (port := int(port_text)) <= 65535:
        raise _bad(f"{_shown(authority)!r}: {_shown(port_text)!r} is not a port 1-65535")
    if dotted_quad:
        try:
            host = IPv4Address(host_text.decode("ascii"))
        except ValueError:
            raise _bad(f"{_shown(authority)!r}: {host!r} is not an IPv4 address") from None
    return Destination(host, port)


@lru_cache(maxsize=HTTP_AUTHORITY_CACHE)
def _cached_authority(authority: bytes, default_port: int | None) -> Destination:
    return parse_authority(authority, default_port)


def _parse_authority(authority: bytes, default_port: int | None) -> Destination:
    """parse_authority() remembered for the authorities a proxy sees again and again (a
    Destination is immutable; an authority it refuses raises again, never cached)."""
    if len(authority) > HTTP_AUTHORITY_CACHED_MAX:
        return parse_authority(authority, default_port)
    return _cached_authority(authority, default_port)


def _shown(text: bytes) -> str:
    return text.decode("ascii", "replace")


def _split_absolute_http(target: bytes) -> tuple[bytes, bytes]:
    """http://authority/path?query → (authority, path-and-query), RFC 9112 §3.2.2."""
    scheme, sep, rest = target.partition(b"://")
    if not sep:
        if target.startswith(b"/") or target == b"*":
            raise _bad(
                "this is a proxy: send the full URL (GET http://host/path) or CONNECT host:port"
            )
        raise _bad(f"{target.decode('ascii', 'replace')!r} is not an absolute http:// URL")
    scheme = scheme.lower()
    if scheme == b"https":
        raise _bad(
            "https:// URLs are not forwarded (proxy64 does not terminate TLS); "
            "use CONNECT host:443, which is what clients do with HTTPS_PROXY"
        )
    if scheme != b"http":
        raise _bad(f"the scheme {scheme.decode('ascii', 'replace')!r} is not supported; only http")
    cut = rest.find(b"/")
    query = rest.find(b"?", 0, len(rest) if cut < 0 else cut)
    if query >= 0:
        cut = query
    elif cut < 0:
        cut = len(rest)
    authority, path = rest[:cut], rest[cut:]
    if b"#" in path:
        path = path.partition(b"#")[0]  # RFC 9112 §3.2: no fragment in a request target
    return authority, path


def _established(http_version: bytes) -> bytes:
    """What h11 writes for our 200 to a CONNECT of this HTTP version."""
    machine = h11.Connection(h11.SERVER)
    machine.receive_data(b"CONNECT a:1 HTTP/%s\r\nHost: a:1\r\n\r\n" % http_version)
    while machine.next_event() is not h11.PAUSED:
        pass
    return machine.send(TUNNEL_ESTABLISHED) or b""


# RFC 9110 §9.3.6: any 2xx to a CONNECT opens the tunnel; no framing headers in it.
TUNNEL_ESTABLISHED = h11.Response(status_code=200, headers=[], reason=b"Connection Established")
# h11's own encoding of that answer, made once per version at import: the bytes never
# change, and h11's send() would build them again for every CONNECT. HTTP/1.0 gets
# "Connection: close".
_ESTABLISHED = {version: _established(version) for version in (b"1.0", b"1.1")}


def tunnel_established(http_version: bytes) -> bytes | None:
    """The encoded 200 for a CONNECT request of this version; None: let h11 encode it."""
    return _ESTABLISHED.get(http_version)


def head_size(request: h11.Request, scan: RequestScan) -> int:
    """The size of the head as sent: the request line (method SP target SP "HTTP/" version
    CRLF), the header lines scanned (scan_request) and the blank line."""
    line = len(request.method) + len(request.target) + len(request.http_version) + 9
    return line + scan.size + 2


def classify(request: h11.Request, max_head: int = HTTP_MAX_HEAD) -> Target:
    """Decide what a request head asks the proxy to do, or raise RemoteProtocolError."""
    headers: list[Header] = request.headers.raw_items()
    scan = scan_request(headers)  # every header line looked at once
    if head_size(request, scan) > max_head:
        # h11 bounds only an incomplete head; a head that arrived whole is checked here.
        raise _bad(f"the request head is larger than {max_head} bytes", 431)
    version = request.http_version
    if version not in HTTP1_VERSIONS and (request.method == b"CONNECT" or version[:2] != b"1."):
        # RFC 9110 §15.6.6: a major version other than 1 over this text framing, or a
        # tunnel asked in a version whose CONNECT proxy64 cannot know (HTTP/0.9 has none).
        shown = version.decode("ascii", "replace")
        raise _bad(f"HTTP/{shown} is not supported; send HTTP/1.1 (or HTTP/1.0)", 505)
    oversized = scan.oversized
    if oversized is not None:
        raise _bad(
            f"Content-Length {_shown(oversized[:40])} is larger than a 63-bit integer holds "
            "(RFC 9110 §8.6)"
        )
    if scan.both_framings:
        # RFC 9112 §6.3: both framings at once "ought to be handled as an error" (smuggling).
        raise _bad("the request has both Transfer-Encoding and Content-Length; send one")
    if request.method == b"CONNECT":
        # RFC 9112 §3.2.3: authority-form, only for CONNECT, port mandatory.
        if b"/" in request.target or b"://" in request.target:
            raise _bad("CONNECT needs host:port, not a URL (RFC 9112 §3.2.3)")
        return ConnectTarget(_parse_authority(request.target, None))
    authority, path = _split_absolute_http(request.target)
    destination = _parse_authority(authority, HTTP_DEFAULT_PORT)
    if not path:
        # RFC 9112 §3.2.4: OPTIONS with an empty path becomes "*"; otherwise "/" (§3.2.1).
        path = b"*" if request.method == b"OPTIONS" else b"/"
    elif path.startswith(b"?"):
        path = b"/" + path
    # RFC 9112 §3.2.2: Host carries the request-target's authority as the client wrote it.
    host = authority[:-1] if authority.endswith(b":") else authority
    forwarded = scan.upstream_headers(host, request.http_version)
    if request.method in (b"OPTIONS", b"TRACE"):
        hops = _max_forwards(scan.max_forwards)
        if hops == 0:
            return _answer_locally(request, headers)
        if hops is not None:  # RFC 9110 §7.6.2: forward the value decremented by one
            forwarded = [
                (n, str(hops - 1).encode() if n.lower() == b"max-forwards" else v)
                for n, v in forwarded
            ]
    upstream = checked_request(request.method, path, forwarded)
    return ForwardTarget(
        destination=destination,
        request=upstream,
        expects_continue=scan.continue_expected,
        retryable=request.method in IDEMPOTENT_METHODS and not scan.content,
    )


def _max_forwards(value: bytes | None) -> int | None:
    """The first Max-Forwards value (stripped) as a number, None when there is none."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 9:
        raise _bad(f"Max-Forwards must be a number, not {value.decode('ascii', 'replace')!r}")
    return int(value)


def _answer_locally(request: h11.Request, headers: Sequence[Header]) -> LocalAnswer:
    """RFC 9110 §7.6.2: with Max-Forwards 0 the proxy responds as the final recipient."""
    if request.method == b"OPTIONS":
        body = b""
        extra: list[Header] = [(b"Allow", PROXY_METHODS)]
    else:  # TRACE, RFC 9110 §9.3.8: echo the request head as message/http
        lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
        lines += [b"%s: %s" % (n, v) for n, v in headers if n.lower() not in _TRACE_HIDDEN]
        body = b"\r\n".join(lines) + b"\r\n\r\n"
        extra = [(b"Content-Type", b"message/http")]
    response_headers = [*extra, (b"Content-Length", str(len(body)).encode("ascii"))]
    response = h11.Response(status_code=200, headers=response_headers, reason=b"OK")
    return LocalAnswer(response, body)


# A fixed password compared against when the user name is unknown, so the time taken does
# not tell which user names exist.
_NO_SUCH_USER = b"\x00" * 32


def check_proxy_auth(headers: Sequence[Header], credentials: Mapping[str, str] | None) -> None:
    """RFC 9110 §11.7.2 / RFC 7617 Basic: raise a 407 RemoteProtocolError unless accepted."""
    if credentials is None:
        return
    supplied = [v for n, v in headers if n.lower() == b"proxy-authorization"]
    if not supplied:
        raise _bad("send Proxy-Authorization: Basic with a user name and password", 407)
    scheme, _, token = supplied[0].strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise _bad("proxy authentication required: only the Basic scheme is accepted", 407)
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _bad("proxy authentication: the Basic credentials are not base64", 407) from None
    user, sep, password = decoded.partition(b":")
    if not sep:
        raise _bad("proxy authentication: Basic credentials need user:password", 407)
    user_text = user.decode("utf-8", "replace")
    expected = credentials.get(user_text)
    wanted = expected.encode("utf-8") if expected is not None else _NO_SUCH_USER
    if not hmac.compare_digest(password, wanted) or expected is None:
        raise _bad("proxy authentication failed: wrong user name or password", 407)


REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    508: b"Loop Detected",
}

_TITLES = {
    400: "bad request",
    403: "not allowed",
    407: "proxy authentication required",
    408: "request head not received in time",
    431: "request head too large",
    500: "internal error",
    501: "not implemented",
    502: "cannot reach the destination",
    503: "proxy busy",
    504: "destination timed out",
    505: "HTTP version not supported",
    508: "loop detected",
}


def error_response(status: int, message: str) -> tuple[h11.Response, bytes]:
    """A complete error answer: status line, plain-text body saying what happened, close."""
    title = _TITLES.get(status, "error")
    body = f"proxy64: {title}: {message}\n".encode("utf-8", "replace")
    headers: list[Header] = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode("ascii")),
        (b"Connection", b"close"),
    ]
    if status == 407:
        headers.append((b"Proxy-Authenticate", PROXY_REALM))
    response = h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
    return response, body
