"""h11 events made of fields h11 has already checked, so that it does not check them again.

A forwarded request and a forwarded response are the fields h11's parser accepted from
the client or the origin (names and values matched against RFC 9110 §5.1 / §5.5 as they
were read), with proxy64's own additions, which are constants of proxy64/proto/
http_headers.py (Via) and values derived from checked fields (Host from the request
target after parse_authority, Max-Forwards decremented). h11 would run its field-name and
field-value expressions over every one of them a second time when the event is made;
`_parsed=True` is the switch h11's own reader uses for fields it has just parsed: it
skips those expressions and the str→bytes conversion, and keeps everything else h11 does
when an event is made (lower-casing names, the Content-Length / Transfer-Encoding framing
checks, the Host count for a request, the method and target checks).

tests/proto/test_h11_checked.py holds this to h11's full check: for every request
classify() forwards and every response the exchange passes on, the checked construction
would accept the same fields and yields the same event.
"""

from __future__ import annotations

import h11

from proxy64.proto.http_headers import Header


def checked_request(method: bytes, target: bytes, headers: list[Header]) -> h11.Request:
    """An HTTP/1.1 request of fields h11 already checked (the module's docstring)."""
    return h11.Request(method=method, target=target, headers=headers, _parsed=True)


def checked_response(status_code: int, headers: list[Header], reason: bytes) -> h11.Response:
    """A response of fields h11 already checked (status_code an int, reason from h11's
    parser): HTTP/1.1, since it is proxy64 that sends it."""
    return h11.Response(
        status_code=status_code,
        headers=headers,
        reason=reason,
        http_version=b"1.1",
        _parsed=True,
    )
