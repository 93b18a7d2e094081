"""One DNS query to one upstream server, answers matched as RFC 5452 §9.1 asks.

dnspython does the matching: a datagram counts only when it comes from the server's
address and port (`ignore_unexpected`) and is a response to our query, that is QR=1,
the same ID, opcode and question (`ignore_errors` with `Message.is_response`). Anything
else, including datagrams that are not DNS messages at all, is ignored while the real
answer is awaited, so a host that can send UDP to our port cannot end a lookup.

The query ID is random (dnspython's `dns.entropy`) and the source port is the kernel's
random ephemeral port (RFC 5452 §9.2; Linux picks it at random for an unbound UDP socket),
one socket per query. The socket is connected to the server, so an ICMP port-unreachable
(nothing listens there) is reported at once as a refusal instead of waiting for the
timeout.

A lookup that failed says why: "timed out", "refused", "sent only malformed answers" or
"sent only answers that do not match the query" (the observer below counts what the
library ignored).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import dns._asyncbackend
import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message

from proxy64.config import HostPort

log = logging.getLogger(__name__)


class DnsExchangeError(Exception):
    """One server gave no usable answer; the message says how (for the lookup's error)."""


class _ObservedSocket(dns._asyncbackend.DatagramSocket):
    """A datagram socket that remembers what arrived, so a failure can be named."""

    def __init__(self, inner: Any, query: dns.message.Message) -> None:
        super().__init__(inner.family, socket.SOCK_DGRAM)
        self._inner = inner
        self._query = query
        self.malformed = 0
        self.unmatched = 0

    async def sendto(
        self,
        what: bytes,
        destination: Any,
        timeout: float | None,  # noqa: ASYNC109 (dnspython's API)
    ) -> int:
        return int(await self._inner.sendto(what, destination, timeout))

    async def recvfrom(
        self,
        size: int,
        timeout: float | None,  # noqa: ASYNC109 (dnspython's API)
    ) -> tuple[bytes, Any]:
        wire, source = await self._inner.recvfrom(size, timeout)
        try:
            message = dns.message.from_wire(wire)
        except Exception:  # anything dnspython cannot parse is malformed
            self.malformed += 1
        else:
            if not self._query.is_response(message):
                self.unmatched += 1
        return wire, source

    async def close(self) -> None:
        await self._inner.close()

    async def getpeername(self) -> Any:
        return await self._inner.getpeername()

    async def getsockname(self) -> Any:
        return await self._inner.getsockname()

    def ignored(self) -> str:
        """What was ignored, as words; "" when nothing arrived."""
        parts = []
        if self.malformed:
            parts.append(f"{self.malformed} malformed (not a DNS message)")
        if self.unmatched:
            parts.append(
                f"{self.unmatched} not matching the query (ID, question or QR; RFC 5452 §9.1)"
            )
        return " and ".join(parts)


async def exchange(
    query: dns.message.Message, server: HostPort, per_try: float
) -> dns.message.Message:
    """The server's answer to query over UDP, then TCP when it has TC=1 (RFC 7766 §5).

    Raises DnsExchangeError naming what went wrong.
    """
    backend = dns.asyncbackend.get_backend("trio")
    where = str(server.host)
    family = socket.AF_INET6 if server.host.version == 6 else socket.AF_INET
    inner = await backend.make_socket(  # type: ignore[no-untyped-call]
        family, socket.SOCK_DGRAM, 0, None, (where, server.port)
    )
    observed = _ObservedSocket(inner, query)
    try:
        response = await dns.asyncquery.udp(
            query,
            where,
            timeout=per_try,
            port=server.port,
            ignore_unexpected=True,
            ignore_errors=True,
            sock=observed,
        )
    except dns.exception.Timeout:
        ignored = observed.ignored()
        if observed.malformed and not observed.unmatched:
            raise DnsExchangeError(
                f"{server} sent only malformed answers ({ignored}), then timed out"
            ) from None
        if ignored:
            raise DnsExchangeError(
                f"{server} sent only answers that were ignored ({ignored}), then timed out"
            ) from None
        raise DnsExchangeError(f"{server} timed out after {per_try:g} s") from None
    except ConnectionRefusedError:
        raise DnsExchangeError(
            f"{server} refused the query (ICMP port unreachable: no DNS server listens there)"
        ) from None
    except OSError as exc:
        raise DnsExchangeError(f"{server}: {exc.strerror or exc}") from None
    except dns.exception.DNSException as exc:
        raise DnsExchangeError(f"{server}: {exc}") from None
    finally:
        await observed.close()
    if observed.malformed or observed.unmatched:
        log.info(
            "DNS: ignored %s from %s before its answer for %s",
            observed.ignored(),
            server,
            query.question[0].name,
        )
    if response.flags & dns.flags.TC:
        # RFC 7766 §5: a truncated UDP answer is asked again over TCP.
        log.debug("TC=1 from %s for %s, retrying over TCP", server, query.question[0].name)
        try:
            response = await dns.asyncquery.tcp(
                query, where, timeout=per_try, port=server.port, backend=backend
            )
        except dns.exception.Timeout:
            raise DnsExchangeError(f"{server} timed out over TCP after {per_try:g} s") from None
        except ConnectionRefusedError:
            raise DnsExchangeError(f"{server} refused the TCP connection") from None
        except (OSError, EOFError) as exc:
            raise DnsExchangeError(f"{server} over TCP: {exc or type(exc).__name__}") from None
        except dns.exception.DNSException as exc:
            raise DnsExchangeError(f"{server} sent a malformed answer over TCP ({exc})") from None
    return response
