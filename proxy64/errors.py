"""The exception tree of proxy64.

Every failure has a type, a sentence a person understands and a wire consequence:
each peer-facing error carries the SOCKS5 reply code and HTTP status it implies, so the
front ends never guess. Our own bugs (LocalProtocolError) are a different type from a
peer breaking a protocol (RemoteProtocolError).
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

# The errnos of an OSError that says this process or system ran out of fds or memory (a
# socket, pipe or accept could not be had): a reason to wait or fall back, not a peer's fault.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class SocksReply(enum.IntEnum):
    """RFC 1928 §6 reply codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06  # also used for "timed out", as curl and dante read it
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Proxy64Error(Exception):
    """Base of every error proxy64 raises on purpose."""

    socks_reply: SocksReply = SocksReply.GENERAL_FAILURE
    http_status: int = 502
    # The readiness mark: the destination lies under 64:ff9b::/96 in a range a strict
    # NAT64 refuses (RFC 6052 §3.1, tayga >= 0.9.4); set by the dialer.
    strict_nat64_refuses: bool = False

    def reply_text(self) -> str:
        """What the client is told (an HTTP body): the message, unless it says more than a
        client should learn (the access rules)."""
        return str(self)


class ConfigError(Proxy64Error):
    """A bad option or config value. The message names the option and the accepted forms."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}")


class ProtocolError(Proxy64Error):
    pass


class LocalProtocolError(ProtocolError):
    """We misused a protocol machine: a bug in proxy64, never the peer's fault."""


class RemoteProtocolError(ProtocolError):
    """The peer broke SOCKS/HTTP/DNS. Carries the reply to send before closing."""

    def __init__(
        self,
        message: str,
        *,
        socks_reply: SocksReply = SocksReply.GENERAL_FAILURE,
        http_status: int = 400,
    ) -> None:
        super().__init__(message)
        self.socks_reply = socks_reply
        self.http_status = http_status


class NotAllowedError(Proxy64Error):
    """The destination is refused by policy (authentication, ruleset)."""

    socks_reply = SocksReply.NOT_ALLOWED
    http_status = 403


class DeniedByRuleError(NotAllowedError):
    """An access rule denies the destination (proxy64/rules.py): SOCKS 0x02 (not allowed
    by ruleset), HTTP 403. The message, which the log line carries, names the rule; the
    reply says only that the rules refuse it (a client learns nothing of the rules)."""

    def __init__(self, destination: str, rule: str, address: str | None, hint: str = "") -> None:
        self.destination = destination
        self.rule = rule
        at = f" at {address}" if address is not None else ""  # the address that matched
        super().__init__(f"refused {destination}{at}: denied by {rule}{hint}")

    def reply_text(self) -> str:
        return f"{self.destination} is not allowed by this proxy's access rules"


class LoopError(NotAllowedError):
    """The destination is one of proxy64's own listeners: dialing it would loop.

    SOCKS 0x02 (not allowed by ruleset), HTTP 508 Loop Detected (RFC 5842 §7.2)."""

    http_status = 508

    def __init__(self, destination: str, listener: str) -> None:
        self.destination = destination
        self.listener = listener
        super().__init__(
            f"loop refused: {destination} is proxy64's own listener {listener}; a proxy "
            "that dials itself serves itself (chain to another proxy, not to this one)"
        )


class ResolutionError(Proxy64Error):
    """A name could not be turned into addresses.

    reason is one of NXDOMAIN, NODATA, SERVFAIL, TIMEOUT (the DNS outcome; TIMEOUT: no
    usable answer in time, the detail says per server whether it timed out, refused or
    sent malformed answers), so the message says which: "DNS NXDOMAIN for
    example.invalid" is actionable, "failed" is not.
    """

    REASONS = ("NXDOMAIN", "NODATA", "SERVFAIL", "TIMEOUT")

    socks_reply = SocksReply.HOST_UNREACHABLE
    http_status = 502

    def __init__(self, qname: str, reason: str, detail: str = "") -> None:
        if reason not in self.REASONS:
            raise LocalProtocolError(f"unknown resolution failure reason {reason!r}")
        self.qname = qname
        self.reason = reason
        self.detail = detail
        if reason == "TIMEOUT":
            self.http_status = 504
            self.socks_reply = SocksReply.TTL_EXPIRED
        text = {
            "NXDOMAIN": f"DNS NXDOMAIN: the name {qname} does not exist",
            "NODATA": f"DNS NODATA: {qname} has neither AAAA nor A records",
            "SERVFAIL": f"DNS SERVFAIL: the DNS server failed to resolve {qname}",
            "TIMEOUT": f"DNS timeout: no usable answer for {qname}",
        }[reason]
        super().__init__(f"{text}{'; ' + detail if detail else ''}")


class AddressMappingError(Proxy64Error):
    """RFC 6052 refuses the mapping (prefix length, u-octet), or --strict-wkp refuses what a
    strict NAT64 refuses under 64:ff9b::/96 (RFC 6052 §3.1)."""

    socks_reply = SocksReply.NOT_ALLOWED
    http_status = 403


class DialCause(enum.Enum):
    """Why one connection attempt failed, as the wire reports it."""

    REFUSED = "connection refused"
    NETWORK_UNREACHABLE = "network unreachable"
    HOST_UNREACHABLE = "host unreachable"
    TIMEOUT = "timed out"
    OTHER = "failed"


_CAUSE_REPLY = {
    DialCause.REFUSED: SocksReply.CONNECTION_REFUSED,
    DialCause.NETWORK_UNREACHABLE: SocksReply.NETWORK_UNREACHABLE,
    DialCause.HOST_UNREACHABLE: SocksReply.HOST_UNREACHABLE,
    DialCause.TIMEOUT: SocksReply.TTL_EXPIRED,
    DialCause.OTHER: SocksReply.GENERAL_FAILURE,
}


class DialAttempt:
    """One failed connection attempt: the address dialed and why it failed."""

    __slots__ = ("address", "cause", "detail", "hint", "port")

    def __init__(
        self,
        address: IPv4Address | IPv6Address,
        port: int,
        cause: DialCause,
        detail: str,
        *,
        hint: str = "",
    ) -> None:
        self.address = address
        self.port = port
        self.cause = cause
        self.detail = detail
        self.hint = hint  # the likely cause and the way out, when there is one

    def __repr__(self) -> str:
        return f"DialAttempt({self.address}, {self.port}, {self.cause.name}, {self.detail!r})"

    def describe(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        if self.cause is DialCause.OTHER and self.detail:
            # An unnamed cause (out of file descriptors, permission): the detail is the news.
            text = f"{host}:{self.port} failed: {self.detail}"
        else:
            text = f"{host}:{self.port} {self.cause.value}"
        return f"{text}; {self.hint}" if self.hint else text


class DialError(Proxy64Error):
    """Every attempt to connect failed. Carries each attempt's cause.

    The overall cause is the most informative one among the attempts: a refusal means a
    host answered, so it wins over unreachable, which wins over a timeout.
    """

    _PRIORITY = (
        DialCause.REFUSED,
        DialCause.HOST_UNREACHABLE,
        DialCause.NETWORK_UNREACHABLE,
        DialCause.TIMEOUT,
        DialCause.OTHER,
    )

    def __init__(self, target: str, attempts: Sequence[DialAttempt]) -> None:
        self.target = target
        self.attempts = tuple(attempts)
        causes = {a.cause for a in self.attempts}
        self.cause = next((c for c in self._PRIORITY if c in causes), DialCause.OTHER)
        self.socks_reply = _CAUSE_REPLY[self.cause]
        self.http_status = 504 if self.cause is DialCause.TIMEOUT else 502
        tried = "; ".join(a.describe() for a in self.attempts) or "no address to try"
        super().__init__(f"cannot connect to {target}: {self.cause.value} ({tried})")


class PacketError(Proxy64Error):
    """A packet could not be parsed: which layer, why, and at which byte offset."""

    def __init__(self, layer: str, reason: str, offset: int = 0) -> None:
        self.layer = layer
        self.reason = reason
        self.offset = offset
        super().__init__(f"{layer}: {reason} (at byte {offset})")


# --- Packet codec misuse (proxy64/packet): our bugs, never the peer's ----------------------
class PacketFieldError(LocalProtocolError, AttributeError):
    """A field the packet lacks (IPv4 has no flow label, IPv6 no header checksum, an echo
    message has no MTU), or a write through a view over a read-only buffer (parse a
    bytearray to write fields). Also an AttributeError, so getattr(p, name, None) works."""


class PacketValueError(LocalProtocolError, ValueError):
    """A value that does not fit its packet field (a port above 65535, a TTL above 255), or
    builder inputs that cannot make a packet (mixed address families, oversize payload)."""
