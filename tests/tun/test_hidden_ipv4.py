"""The IPv4 an app hides, inside `tun run`: AF_INET sockets to literals reach proxy64 (an
IPv4 default route into the TUN whose source is a local route, RFC 7335 192.0.0.2), are
answered as an IPv6-only network answers (network unreachable) and reported with their
address and port, while getaddrinfo(AI_ADDRCONFIG) still sees an IPv6-only host.

Real commands in a real namespace and TUN (root): python3's socket module, getent, dig.
"""

from __future__ import annotations

import sys

import pytest

from proxy64.config import HostPort
from proxy64.readiness import Level, Verdict, assess_all, gate
from tests.helpers.requirements import require_tool
from tests.tun.harness import run_sandboxed

pytestmark = pytest.mark.network

PY = sys.executable

AF_INET_SCRIPT = """
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(("192.0.2.10", 8080))
except OSError as e:
    print("tcp", errno.errorcode.get(e.errno, e))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"hello", ("100.200.0.10", 5353))
print("udp sent")
"""


async def test_af_inet_tcp_and_udp_to_literals_are_reported_with_address_and_port(
    nsd: HostPort,
) -> None:
    run = await run_sandboxed([PY, "-c", AF_INET_SCRIPT], nsd)
    assert run.status == 0, run.output
    # the error an IPv6-only host gives at once, not a timeout
    assert run.output.splitlines() == ["tcp ENETUNREACH", "udp sent"]
    assert run.stack.table.rejected["ipv4-hidden"] == 2
    rows = {d.destination: d for d in run.recorder.report.destinations()}
    assert set(rows) == {"192.0.2.10:8080", "100.200.0.10:5353"}
    assert rows["192.0.2.10:8080"].front_ends == {"tun-tcp"}
    assert rows["100.200.0.10:5353"].front_ends == {"tun-udp"}
    verdicts = {a.destination: a for a in assess_all(rows.values(), None)}
    tcp = verdicts["192.0.2.10:8080"]
    assert tcp.verdict is Verdict.CLAT and not tcp.reached
    assert tcp.reason.startswith(
        "an AF_INET TCP socket inside tun run to a literal (1 attempt), answered"
    )
    assert verdicts["100.200.0.10:5353"].reason.startswith("an AF_INET UDP socket")
    broken = gate(list(verdicts.values()), Level.REACHABLE).broken
    assert {a.destination for a in broken} == set(rows)


async def test_getent_ahosts_of_a_dual_stack_name_returns_only_ipv6(nsd: HostPort) -> None:
    """glibc's AI_ADDRCONFIG counts any IPv4 interface address but 127.0.0.1: the hidden
    route must add none, or dual.tun.test would resolve to 127.0.0.1 as well."""
    require_tool("getent", "ip")
    script = (
        "getent ahosts dual.tun.test; echo ---; ip -4 -o addr show; echo ---; "
        f"{PY} -c 'import socket; print(sorted({{a[0].name for a in socket.getaddrinfo("
        '"dual.tun.test", 80, flags=socket.AI_ADDRCONFIG)}))\'; echo ---; ip -4 route'
    )
    run = await run_sandboxed(["sh", "-c", script], nsd)
    getent, addresses, families, routes = run.output.split("---\n")
    assert {line.split()[0] for line in getent.splitlines() if line.strip()} == {"::1"}
    assert [line.split()[3] for line in addresses.splitlines()] == ["127.0.0.1/8"]
    assert families.strip() == "['AF_INET6']"
    assert "default dev p64tun0" in routes and "src 192.0.0.2" in routes


async def test_a_lookups_through_the_sandbox_dns64_are_counted_per_name(nsd: HostPort) -> None:
    """An app asking for A records (AF_INET getaddrinfo) on an IPv6-only host is
    IPv4-aware code: the report counts it per name."""
    require_tool("dig")
    script = (
        f"{PY} -c 'import socket\n"
        'try: socket.getaddrinfo("v4only.tun.test", 80, socket.AF_INET)\n'
        "except OSError as e: print(e)'; "
        "dig +short +tries=1 +time=3 A dual.tun.test; dig +short +tries=1 +time=3 A dual.tun.test"
    )
    run = await run_sandboxed(["sh", "-c", script], nsd)
    lookups = dict(run.recorder.report.a_lookups)
    assert lookups == {"v4only.tun.test": 1, "dual.tun.test": 2}
