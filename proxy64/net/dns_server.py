"""The DNS64 server: one query in, one reply out, over UDP and TCP on the same address.

DNS64Responder.respond() is the whole behaviour (the TUN mode calls it directly): AAAA
through the DNS64 resolver (RFC 6147 §5.1), PTR inside the NAT64 prefix answered with a
CNAME into in-addr.arpa (§5.3.1) plus the upstream PTR, AXFR/IXFR refused, every other
type passed through to upstream. Garbage gets FORMERR when a header can be read, and is
dropped otherwise; no input raises. serve_dns64() is the thin socket loop around it.
"""

from __future__ import annotations

import logging
import struct
from typing import Literal

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import trio

from proxy64.config import HostPort
from proxy64.defaults import (
    DNS_SERVER_BIND_TRIES,
    DNS_SERVER_MAX_INFLIGHT,
    DNS_SERVER_MAX_TCP,
    DNS_SERVER_TCP_IDLE,
    DNS_TCP_MAX_MESSAGE,
)
from proxy64.errors import ResolutionError
from proxy64.proto.dns64_reply import (
    fill_dns64,
    fill_passthrough,
    header_error_reply,
    make_reply,
    ptr_cname_rrset,
    ptr_cname_target,
    render,
    udp_limit,
)

from .resolver import DNS64Resolver

log = logging.getLogger(__name__)

_REFUSED_TYPES = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)  # zone transfers: not a resolver


class DNS64Responder:
    def __init__(self, resolver: DNS64Resolver) -> None:
        self.resolver = resolver
        self.answered = 0
        self.dropped = 0
        self.formerr = 0

    async def respond(self, wire: bytes, *, transport: Literal["udp", "tcp"]) -> bytes | None:
        """The reply to one DNS message, or None when it must be dropped."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # untrusted bytes: any parse failure is the peer's FORMERR
            error = header_error_reply(wire)
            if error is None:
                self.dropped += 1
            else:
                self.formerr += 1
            return error
        if query.flags & dns.flags.QR:
            self.dropped += 1
            return None  # a response, not a query: never answer it
        limit = udp_limit(query) if transport == "udp" else DNS_TCP_MAX_MESSAGE
        self.answered += 1
        try:
            return render(await self._answer(query), limit)
        except Exception:
            # A bug must not take the server down; the client gets SERVFAIL, we get a trace.
            log.exception("DNS64 server failed on %s", query.question)
            return header_error_reply(wire, dns.rcode.SERVFAIL)

    async def _answer(self, query: dns.message.Message) -> dns.message.Message:
        if query.edns > 0:
            return make_reply(query, dns.rcode.BADVERS)  # RFC 6891 §6.1.3: we speak EDNS 0
        if query.opcode() != dns.opcode.QUERY:
            return make_reply(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return make_reply(query, dns.rcode.FORMERR)
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN or question.rdtype in _REFUSED_TYPES:
            return make_reply(query, dns.rcode.REFUSED)
        reply = make_reply(query)
        dnssec_ok = bool(query.ednsflags & dns.flags.DO)
        checking_disabled = bool(query.flags & dns.flags.CD)
        if question.rdtype == dns.rdatatype.AAAA and not (dnssec_ok and checking_disabled):
            # RFC 6147 §5.5: a validating client (DO=1, CD=1) gets the real data instead.
            answer, _ = await self.resolver.lookup(question.name)
            fill_dns64(reply, answer)
            return reply
        target = None
        if question.rdtype == dns.rdatatype.PTR:
            target = ptr_cname_target(question.name, self.resolver.prefix)
        if target is not None:
            # RFC 6147 §5.3.1: CNAME to the IPv4 reverse name, plus its PTR if upstream has it.
            reply.answer.append(ptr_cname_rrset(question.name, target))
            upstream = await self._upstream(target, dns.rdatatype.PTR)
            if upstream is not None:
                fill_passthrough(reply, upstream)
            return reply
        upstream = await self._upstream(
            question.name, question.rdtype, dnssec_ok=dnssec_ok, checking_disabled=checking_disabled
        )
        if upstream is None:
            reply.set_rcode(dns.rcode.SERVFAIL)
        else:
            fill_passthrough(reply, upstream)
        return reply

    async def _upstream(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        *,
        dnssec_ok: bool = False,
        checking_disabled: bool = False,
    ) -> dns.message.Message | None:
        try:
            return await self.resolver.query(
                qname, rdtype, dnssec_ok=dnssec_ok, checking_disabled=checking_disabled
            )
        except ResolutionError as exc:
            log.info("%s", exc)
            return None


async def serve_dns64(
    responder: DNS64Responder,
    listen: HostPort,
    *,
    task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve DNS on UDP and TCP at listen (port 0: one free port for both); runs forever.

    task_status.started() receives the address actually bound.
    """
    udp, tcp = await _bind_udp_and_tcp(listen)
    port = udp.getsockname()[1]
    with udp, tcp:
        tcp.listen(DNS_SERVER_MAX_TCP)
        listener = trio.SocketListener(tcp)
        bound = HostPort(listen.host, port)
        log.debug("DNS64 server on %s (UDP and TCP), prefix %s", bound, responder.resolver.prefix)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_udp, responder, udp)
            nursery.start_soon(_serve_tcp, responder, listener)
            task_status.started(bound)


async def _bind_udp_and_tcp(
    listen: HostPort,
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """UDP and TCP sockets on the same port; with port 0, retry until a port is free for both."""
    family = trio.socket.AF_INET6 if listen.host.version == 6 else trio.socket.AF_INET
    for _ in range(DNS_SERVER_BIND_TRIES):
        udp = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        tcp.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        try:
            await udp.bind((str(listen.host), listen.port))
            await tcp.bind((str(listen.host), udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            if listen.port != 0:
                raise
            continue
        return udp, tcp
    raise OSError(f"no port free for both UDP and TCP on {listen.host}")


async def _serve_udp(responder: DNS64Responder, sock: trio.socket.SocketType) -> None:
    limiter = trio.CapacityLimiter(DNS_SERVER_MAX_INFLIGHT)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                wire, peer = await sock.recvfrom(DNS_TCP_MAX_MESSAGE)
            except OSError as exc:  # e.g. ICMP port unreachable reported on Linux
                log.debug("DNS UDP receive: %s", exc)
                continue
            await limiter.acquire_on_behalf_of(peer)  # back-pressure: stop reading when full
            nursery.start_soon(_answer_udp, responder, sock, wire, peer, limiter)


async def _answer_udp(
    responder: DNS64Responder,
    sock: trio.socket.SocketType,
    wire: bytes,
    peer: tuple[str, int],
    limiter: trio.CapacityLimiter,
) -> None:
    try:
        reply = await responder.respond(wire, transport="udp")
        if reply is not None:
            try:
                await sock.sendto(reply, peer)
            except OSError as exc:
                log.debug("DNS UDP reply to %s: %s", peer, exc)
    finally:
        limiter.release_on_behalf_of(peer)


async def _serve_tcp(responder: DNS64Responder, listener: trio.SocketListener) -> None:
    limiter = trio.CapacityLimiter(DNS_SERVER_MAX_TCP)
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            await limiter.acquire_on_behalf_of(stream)
            nursery.start_soon(_serve_tcp_connection, responder, stream, limiter)


async def _serve_tcp_connection(
    responder: DNS64Responder, stream: trio.SocketStream, limiter: trio.CapacityLimiter
) -> None:
    """RFC 1035 §4.2.2 / RFC 7766 §6.2: length-prefixed messages, one reply each, in order."""
    buffer = bytearray()
    try:
        async with stream:
            while True:
                message = None
                with trio.move_on_after(DNS_SERVER_TCP_IDLE):
                    message = _take_message(buffer)
                    while message is None:
                        data = await stream.receive_some(DNS_TCP_MAX_MESSAGE)
                        if not data:
                            return
                        buffer += data
                        message = _take_message(buffer)
                if message is None:
                    return  # idle too long (RFC 7766 §6.2.3)
                reply = await responder.respond(message, transport="tcp")
                if reply is None:
                    return  # unreadable: close, as RFC 7766 §6.2.3 allows
                await stream.send_all(struct.pack("!H", len(reply)) + reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("DNS TCP connection: %s", exc)
    finally:
        limiter.release_on_behalf_of(stream)


def _take_message(buffer: bytearray) -> bytes | None:
    if len(buffer) < 2:
        return None
    (length,) = struct.unpack_from("!H", buffer)
    if len(buffer) < 2 + length:
        return None
    message = bytes(buffer[2 : 2 + length])
    del buffer[: 2 + length]
    return message


__all__ = ["DNS64Responder", "serve_dns64"]
