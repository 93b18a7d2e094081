"""A request head parsed by h11 as proxy64's HTTP server parses it, for the pure tests of
what happens to it next (proxy64/proto/httpproxy.py)."""

from __future__ import annotations

import h11


def head(raw: bytes) -> h11.Request:
    """Parse a request head with h11, as the server does."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    return event
