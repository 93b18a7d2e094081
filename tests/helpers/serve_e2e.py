"""`proxy64 serve` as a subprocess with the embedded egress, for the end-to-end tests of
the front ends: a small DNS server whose one name has only an A record (so proxy64
synthesizes), the proxy started against it, a SOCKS5 request through it, and a wait for
the proxy's log to say something.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

from tests.helpers.curl import clean_env
from tests.helpers.proxy_process import ProxyProcess, proxy_process
from tests.helpers.socks5_client import open_socks5

PREFIX = "2001:db8:64::/96"
NAME = "origin.p64.test"
CLEAN_ENV = clean_env()


async def serve_a_only_dns(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """UDP DNS on 127.0.0.1: NAME has A 127.0.0.1 and no AAAA; other names NXDOMAIN."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, client = await sock.recvfrom(4096)
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            if question.name.to_text().rstrip(".").lower() != NAME:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1")
                )
            await sock.sendto(response.to_wire(), client)


@contextmanager
def serve_embedded(dns_port: int, *args: str) -> Iterator[ProxyProcess]:
    """proxy64 serve with the embedded egress under PREFIX, resolving with the DNS server
    on 127.0.0.1:dns_port, without the proxy variables of this environment."""
    with proxy_process(
        "--egress", "embedded", "--nat64-prefix", PREFIX,
        "--dns", f"127.0.0.1:{dns_port}", *args, env=CLEAN_ENV,
    ) as proxy:  # fmt: skip
        assert proxy.socks is not None
        yield proxy


async def socks5(
    proxy: ProxyProcess, request: bytes, **handshake: bytes
) -> tuple[trio.SocketStream, bytes]:
    assert proxy.socks is not None
    return await open_socks5(proxy.socks, request, **handshake)


async def wait_log(proxy: ProxyProcess, *needles: str) -> str:
    """The proxy's log once it holds every needle (a record is logged when its handler
    ends, just after the client saw the close); fails after about 5 s."""
    for _ in range(100):
        log = proxy.output()
        if all(needle in log for needle in needles):
            return log
        await trio.sleep(0.05)
    missing = [n for n in needles if n not in log]
    raise AssertionError(f"log lacks {missing}:\n{log}")
