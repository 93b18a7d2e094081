"""The shared parts every front end is handed (SOCKS5, HTTP, TUN): built once in app.py.

Front ends never build a dialer or resolver themselves; they receive a ProxyContext.
The dialer's interface is proxy64/net/dial_types.py; the recorder's and the relay's are
here. Protocols let tests pass fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

from proxy64.defaults import CONNECT_TIMEOUT
from proxy64.net.auth_gate import AuthGate
from proxy64.net.dial_types import DialerLike
from proxy64.net.record import ConnectionRecord, live_tunnels
from proxy64.net.relay_hub import RelayHub
from proxy64.net.slots import ConnectionSlots

__all__ = ["ConnectionRecord", "ProxyContext", "RecorderLike", "RelayLike", "live_tunnels"]


class RecorderLike(Protocol):
    def finish(self, record: ConnectionRecord) -> None:
        """Log the record's one info line and add it to the readiness report."""
        ...


class RelayLike(Protocol):
    async def __call__(
        self,
        client: trio.abc.HalfCloseableStream,
        remote: trio.abc.HalfCloseableStream,
        record: ConnectionRecord,
    ) -> None:
        """Copy both ways until both sides are done; half-close kept; counts into record."""
        ...


@dataclass(frozen=True, slots=True)
class ProxyContext:
    """Everything a front end's per-connection handler needs, built once by app.py.

    Front ends expose `async def handle_<proto>_client(stream, ctx) -> None`; app.py owns
    the listeners (so --workers and SO_REUSEPORT live in one place) and calls them.
    """

    dialer: DialerLike
    recorder: RecorderLike
    relay: RelayLike
    credentials: dict[str, str] | None  # username → password; None: no authentication
    handshake_timeout: float
    idle_timeout: float
    connection_slots: ConnectionSlots  # --max-connections, --max-client-connections
    auth_gate: AuthGate | None = None  # holds answers to an address that keeps failing
    # the dialer's whole-dial bound (--connect-timeout); a front end that watches a dial
    # itself (HTTP's 504) waits this long plus a grace
    connect_timeout: float = CONNECT_TIMEOUT
    # the relay hub every socket-to-socket tunnel and hub-driven front end of this run
    # shares (the server runs it); None: tunnels are relayed by their tasks alone
    hub: RelayHub | None = None
