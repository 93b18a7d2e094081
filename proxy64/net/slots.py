"""Connection slots: --max-connections in all, and a budget per client address.

Every accepted connection borrows one slot on behalf of a token (the connection) and
gives it back when it ends. A borrow fails when every slot is taken, or when the
client's address already holds --max-client-connections of them, so one client (or one
address behind which many hide) cannot take every slot and starve the rest: it is
refused like a full proxy (SOCKS 0x01 / HTTP 503) while other addresses are served.
No I/O and no clock: plain counters, driven by the front ends at accept and at the end.
"""

from __future__ import annotations

import trio


def client_host(client: str) -> str:
    """The address part of "host:port" / "[v6]:port" (the budget's key)."""
    if client.startswith("["):
        return client[1 : client.find("]")] if "]" in client else client
    host, sep, _ = client.rpartition(":")
    return host if sep else client


class ConnectionSlots:
    """The connection limits of one process (trio.CapacityLimiter's nowait subset)."""

    __slots__ = ("_by_client", "_holders", "per_client", "total_tokens")

    def __init__(self, total: int, per_client: int | None = None) -> None:
        self.total_tokens = total
        self.per_client = min(per_client, total) if per_client is not None else total
        self._holders: dict[object, str] = {}  # token → client address
        self._by_client: dict[str, int] = {}  # client address → slots held

    @property
    def borrowed_tokens(self) -> int:
        return len(self._holders)

    def held_by(self, client: str) -> int:
        return self._by_client.get(client_host(client), 0)

    def borrow(self, token: object, client: str = "") -> bool:
        """Take a slot for token on behalf of client ("host:port"); False when refused."""
        if token in self._holders:
            raise RuntimeError("this token already holds a connection slot")
        if len(self._holders) >= self.total_tokens:
            return False
        host = client_host(client)
        held = self._by_client.get(host, 0)
        if held >= self.per_client:
            return False
        self._holders[token] = host
        self._by_client[host] = held + 1
        return True

    def acquire_on_behalf_of_nowait(self, token: object) -> None:
        """trio.CapacityLimiter's spelling, no client: raises trio.WouldBlock when full."""
        if not self.borrow(token):
            raise trio.WouldBlock

    def release_on_behalf_of(self, token: object) -> None:
        host = self._holders.pop(token)
        left = self._by_client[host] - 1
        if left:
            self._by_client[host] = left
        else:
            del self._by_client[host]

    def refusal(self, client: str) -> str:
        """Why client was refused a slot, naming the option that sets the limit."""
        if len(self._holders) < self.total_tokens and self.held_by(client) >= self.per_client:
            return (
                f"too many connections from {client_host(client)} "
                f"(--max-client-connections {self.per_client})"
            )
        return f"too many connections (--max-connections {self.total_tokens})"
