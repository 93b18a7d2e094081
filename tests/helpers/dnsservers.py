"""DNS servers for tests: real NSD and Unbound processes on loopback, and a fake upstream.

- start_nsd(zones, ...): an authoritative NSD serving the given zone texts.
- start_unbound_dns64(prefix, upstream, ...): Unbound as a DNS64 (`module-config: "dns64
  iterator"`) that forwards everything to `upstream` (your NSD) and never asks the root.
- start_bind_dns64(prefix, upstream, ...): BIND's named as a DNS64 (`dns64 PREFIX { };`),
  forwarding only to `upstream`, in the foreground (`named -g`).
- FakeUpstream: an in-process trio DNS server (UDP + TCP) answering with a handler
  function, for failover, truncation and timeout tests.

Each process gets its own directory, config and pid file, listens on a unique 127.x.y.z
address (so parallel test runs do not collide) and is stopped by its PID (DnsProcess.stop,
or use the process as a context manager). Starting waits until the server answers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Literal

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import trio

from proxy64.config import HostPort
from tests.helpers.requirements import require_tool, tool_path

START_TIMEOUT = 10.0
_counter = itertools.count(1)


def unique_loopback() -> str:
    """A 127/8 address no other test process uses (Linux routes all of 127/8 to lo)."""
    pid, n = os.getpid(), next(_counter)
    return f"127.{50 + pid % 50}.{(pid // 50) % 256}.{n % 254 + 1}"


def free_port(host: str) -> int:
    """A port free on host for both UDP and TCP at the time of the call."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free UDP+TCP port on {host}")


@dataclass
class DnsProcess:
    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    workdir: Path
    log: Path
    own_workdir: bool = True

    @property
    def address(self) -> HostPort:
        return HostPort(ip_address(self.host), self.port)

    def stop(self) -> None:
        """Stop the process by its PID (TERM, then KILL), and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DnsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(
        self, qname: str, rdtype: str, *, tcp: bool = False, timeout: float = 2.0
    ) -> dns.message.Message:
        """A blocking query to this server (for fixtures and readiness checks)."""
        query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
        if tcp:
            return dns.query.tcp(query, self.host, timeout=timeout, port=self.port)
        return dns.query.udp(query, self.host, timeout=timeout, port=self.port)


def _start(
    name: str, argv: list[str], host: str, port: int, workdir: Path, probe: str
) -> DnsProcess:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = DnsProcess(name, process, host, port, workdir, log)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text()}")
            try:
                server.query(probe, "SOA", timeout=0.2)
                return server
            except (OSError, dns.exception.DNSException):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not answer on {host}:{port} within {START_TIMEOUT} s: "
                        f"{log.read_text()}"
                    ) from None
                time.sleep(0.05)
    except BaseException:
        server.stop()
        raise


def start_nsd(
    zones: Mapping[str, str], *, host: str | None = None, port: int | None = None
) -> DnsProcess:
    """An authoritative NSD on host:port serving {zone name: zone file text}."""
    require_tool("nsd")
    host = host or unique_loopback()
    port = port or free_port(host)
    workdir = Path(tempfile.mkdtemp(prefix="p64-dns-nsd-"))
    zone_blocks = []
    for index, (zone, text) in enumerate(zones.items()):
        (workdir / f"zone{index}.zone").write_text(text)
        zone_blocks.append(f'zone:\n    name: "{zone}"\n    zonefile: "zone{index}.zone"\n')
    config = workdir / "nsd.conf"
    config.write_text(
        f"""server:
    ip-address: {host}@{port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    database: ""
    zonelistfile: "{workdir}/zone.list"
    xfrdfile: "{workdir}/xfrd.state"
    xfrdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    logfile: "{workdir}/nsd-own.log"
    hide-version: yes
    verbosity: 1
remote-control:
    control-enable: no
"""
        + "".join(zone_blocks)
    )
    first_zone = next(iter(zones))
    return _start(
        "nsd", [tool_path("nsd"), "-d", "-c", str(config)], host, port, workdir, first_zone
    )


def start_unbound_dns64(
    prefix: str,
    upstream: HostPort,
    *,
    host: str | None = None,
    port: int | None = None,
    probe_zone: str = ".",
    extra: str = "",
) -> DnsProcess:
    """Unbound as DNS64 with prefix, forwarding every name to upstream (no root servers)."""
    require_tool("unbound")
    host = host or unique_loopback()
    port = port or free_port(host)
    workdir = Path(tempfile.mkdtemp(prefix="p64-dns-unbound-"))
    config = workdir / "unbound.conf"
    config.write_text(
        f"""server:
    interface: {host}@{port}
    port: {port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    so-reuseport: no
    outgoing-range: 64
    access-control: 127.0.0.0/8 allow
    module-config: "dns64 iterator"
    dns64-prefix: {prefix}
    local-zone: "test." nodefault
    local-zone: "arpa." nodefault
    do-not-query-localhost: no
    qname-minimisation: no
    harden-referral-path: no
    prefetch: no
    edns-buffer-size: 1232
{extra}
forward-zone:
    name: "."
    forward-addr: {upstream.host}@{upstream.port}
remote-control:
    control-enable: no
"""
    )
    return _start(
        "unbound",
        [tool_path("unbound"), "-d", "-c", str(config)],
        host,
        port,
        workdir,
        probe_zone,
    )


def start_bind_dns64(
    prefix: str,
    upstream: HostPort,
    *,
    host: str | None = None,
    port: int | None = None,
    probe_zone: str = ".",
) -> DnsProcess:
    """BIND 9 as DNS64 with prefix, forwarding only to upstream (no root servers, no
    validation, no built-in empty zones that would answer for test names itself).

    named binds only the addresses it finds on interfaces, so it listens on 127.0.0.1
    (on a free port) rather than on one of the other 127/8 addresses lo routes."""
    require_tool("named")
    host = host or "127.0.0.1"
    port = port or free_port(host)
    workdir = Path(tempfile.mkdtemp(prefix="p64-dns-bind-"))
    config = workdir / "named.conf"
    config.write_text(
        f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}";
    listen-on port {port} {{ {host}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ any; }};
    allow-recursion {{ any; }};
    forward only;
    forwarders {{ {upstream.host} port {upstream.port}; }};
    dnssec-validation no;
    empty-zones-enable no;
    qname-minimization off;
    edns-udp-size 1232;
    max-udp-size 1232;
    dns64 {prefix} {{ }};
}};
controls {{ }};
"""
    )
    return _start(
        "named",
        [tool_path("named"), "-g", "-n", "1", "-c", str(config)],
        host,
        port,
        workdir,
        probe_zone,
    )


# --- a fake upstream in the test process ---------------------------------------------

Handler = Callable[
    [dns.message.Message, Literal["udp", "tcp"]], Awaitable[dns.message.Message | None]
]


@dataclass
class FakeUpstream:
    """A trio DNS server whose answers come from handler(query, transport).

    handler returning None means "do not answer" (a timeout for the client). Every query
    is recorded in `seen` as (qname text, rdtype text, transport).
    """

    handler: Handler
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def address(self) -> HostPort:
        return HostPort(ip_address(self.host), self.port)

    async def serve(
        self, *, task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED
    ) -> None:
        udp, tcp = await _bind_pair(self.host, self.port)
        self.port = udp.getsockname()[1]
        with udp, tcp:
            tcp.listen(16)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._udp, udp)
                nursery.start_soon(self._tcp, trio.SocketListener(tcp))
                task_status.started(self.address)

    async def _reply(self, wire: bytes, transport: Literal["udp", "tcp"]) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        self.seen.append(
            (question.name.to_text(), dns.rdatatype.to_text(question.rdtype), transport)
        )
        reply = await self.handler(query, transport)
        if reply is None:
            return None
        return reply.to_wire(max_size=65535)

    async def _udp(self, sock: trio.socket.SocketType) -> None:
        while True:
            wire, peer = await sock.recvfrom(65535)
            reply = await self._reply(wire, "udp")
            if reply is not None:
                await sock.sendto(reply, peer)

    async def _tcp(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._tcp_connection, stream)

    async def _tcp_connection(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                while len(buffer) < 2 or len(buffer) < 2 + struct.unpack("!H", buffer[:2])[0]:
                    data = await stream.receive_some(65535)
                    if not data:
                        return
                    buffer += data
                (length,) = struct.unpack("!H", buffer[:2])
                wire, buffer = buffer[2 : 2 + length], buffer[2 + length :]
                reply = await self._reply(wire, "tcp")
                if reply is None:
                    return
                await stream.send_all(struct.pack("!H", len(reply)) + reply)


async def _bind_pair(host: str, port: int) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A UDP and a TCP socket bound to the same port (port 0: retry until one is free)."""
    for _ in range(50):
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        tcp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        tcp.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        try:
            await udp.bind((host, port))
            await tcp.bind((host, udp.getsockname()[1]))
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise RuntimeError(f"no free UDP+TCP port on {host}")


def answer(
    query: dns.message.Message,
    *records: str,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    authority: tuple[str, ...] = (),
) -> dns.message.Message:
    """A reply to query with records given as zone-file lines ("name TTL IN TYPE data")."""
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for section, lines in ((reply.answer, records), (reply.authority, authority)):
        for text in lines:
            name, ttl, rdclass, rdtype, data = text.split(None, 4)
            rdata = dns.rdata.from_text(rdclass, rdtype, data)
            rrset = reply.find_rrset(
                section, dns.name.from_text(name), rdata.rdclass, rdata.rdtype, create=True
            )
            rrset.add(rdata, int(ttl))
    return reply


# --- a zone for FakeUpstream -----------------------------------------------------------------

SOA = "example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 300"
ZONE = {
    ("www.example.", "A"): ["www.example. 120 IN A 1.2.3.4"],
    ("v6.example.", "AAAA"): ["v6.example. 100 IN AAAA 2001:db8::6"],
}


def zone_handler(
    zone: dict[tuple[str, str], list[str]] = ZONE,
    *,
    drop: Callable[[str, str, str], bool] = lambda name, rdtype, transport: False,
    rcode_for: Callable[[str, str], dns.rcode.Rcode | None] = lambda name, rdtype: None,
) -> Handler:
    """Answers from zone; NXDOMAIN for names not in it at all; drop() means no answer."""

    async def handle(query: dns.message.Message, transport: str) -> dns.message.Message | None:
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        if drop(name, rdtype, transport):
            return None
        forced = rcode_for(name, rdtype)
        if forced is not None:
            return answer(query, rcode=forced)
        if (name, rdtype) in zone:
            return answer(query, *zone[(name, rdtype)])
        if any(n == name for n, _ in zone):
            return answer(query, authority=(SOA,))  # NODATA
        return answer(query, rcode=dns.rcode.NXDOMAIN, authority=(SOA,))

    return handle


# A zone for the proxy's end-to-end tests: a name with only an A record (synthesized under
# the NAT64 prefix) and one with only an AAAA record (reached natively over ::1).
CORE_ZONE_NAME = "p64core.test."
CORE_ZONE = """$TTL 60
@        IN SOA ns.p64core.test. hostmaster.p64core.test. 1 3600 600 86400 60
@        IN NS  ns.p64core.test.
ns       IN A   127.0.0.1
v4only   IN A   127.0.0.1
v6only   IN AAAA ::1
"""
