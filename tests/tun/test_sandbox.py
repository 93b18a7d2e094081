"""Commands run INSIDE the TUN sandbox (root): curl, getent, dig, ping, UDP, bulk, many flows.

Every test runs a real command in a fresh network namespace whose only network is the
TUN served by the stack in this process, then checks what the command saw and what the
stack recorded. Origins listen on 127.0.0.1 in the root namespace and are reached through
the synthesized 2001:db8:64::7f00:1 with the embedded egress.
"""

from __future__ import annotations

import hashlib
import sys
from functools import partial

import pytest
import trio

from proxy64.config import HostPort
from proxy64.readiness import Verdict, assess_all
from tests.helpers.origins import (
    pattern_bytes,
    serve_http_hello,
    serve_tcp_echo,
    serve_tcp_hash,
    serve_udp_echo,
)
from tests.helpers.requirements import require_tool
from tests.tun.harness import LOOPBACK_SYNTH, run_sandboxed

pytestmark = pytest.mark.network

PY = sys.executable


async def test_curl_by_name_reaches_a_only_origin_through_dns64(nsd: HostPort) -> None:
    require_tool("curl")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http_hello)
        url = f"http://v4only.tun.test:{port}/by-name"
        run = await run_sandboxed(["curl", "-sS", "-m", "10", "-w", " %{remote_ip}", url], nsd)
        nursery.cancel_scope.cancel()
    assert run.status == 0, run.output
    assert run.output == f"hello /by-name\n {LOOPBACK_SYNTH}"
    (dest,) = run.recorder.report.destinations()
    # The name the app resolved through our DNS64, not just the synthesized address.
    assert dest.as_dict()["destination"] == f"v4only.tun.test:{port}"
    assert dest.as_dict()["reached"] == ["dns64-synthesized"]
    assert dest.as_dict()["egress"] == ["embedded"]


async def test_ipv4_literal_is_network_unreachable_but_synthesized_works(nsd: HostPort) -> None:
    require_tool("curl")
    script = (
        "curl -sS -m 5 http://192.0.2.10:{port}/ 2>&1; echo v4=$?; "
        f"{PY} -c 'import socket\n"
        'try:\n socket.create_connection(("192.0.2.10", 80), timeout=3)\n'
        "except OSError as e: print(e.strerror)'; "
        "curl -sS -m 10 http://[{synth}]:{port}/literal; echo v6=$?"
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http_hello)
        run = await run_sandboxed(["sh", "-c", script.format(port=port, synth=LOOPBACK_SYNTH)], nsd)
        nursery.cancel_scope.cancel()
    assert "v4=7" in run.output  # curl: could not connect
    assert "Network is unreachable" in run.output  # ENETUNREACH: no IPv4 route at all
    assert "hello /literal\nv6=0" in run.output


async def test_getent_and_dig_show_only_synthesized_ipv6(nsd: HostPort) -> None:
    require_tool("dig", "getent")
    script = (
        "getent ahosts v4only.tun.test; echo ---; "
        "dig +short +tries=1 +time=3 AAAA v4only.tun.test; "
        "dig +tcp +short +tries=1 +time=3 AAAA v4only.tun.test; echo ---; "
        "getent ahosts v6only.tun.test"
    )
    run = await run_sandboxed(["sh", "-c", script], nsd)
    getent, dig, native = run.output.split("---\n")
    addresses = {line.split()[0] for line in getent.splitlines() if line.strip()}
    assert addresses == {str(LOOPBACK_SYNTH)}  # no IPv4 answer reaches the app
    assert dig.split() == [str(LOOPBACK_SYNTH)] * 2  # over UDP and over TCP
    assert {line.split()[0] for line in native.splitlines()} == {"::1"}


async def test_ping6_synthesized_address_gets_replies(nsd: HostPort) -> None:
    require_tool("ping")
    run = await run_sandboxed(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "3",
                               str(LOOPBACK_SYNTH)], nsd)  # fmt: skip
    assert run.status == 0, run.output
    assert "2 received" in run.output


async def test_udp_echo_through_the_tun(nsd: HostPort) -> None:
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM); s.settimeout(5)\n"
        "for i in range(3):\n"
        " s.sendto(b'ping %d' % i, (sys.argv[1], int(sys.argv[2])))\n"
        " print(s.recv(100).decode())\n"
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_udp_echo)
        run = await run_sandboxed([PY, "-c", script, str(LOOPBACK_SYNTH), str(port)], nsd)
        nursery.cancel_scope.cancel()
    assert run.output.split("\n")[:3] == ["ping 0", "ping 1", "ping 2"]
    assert run.stack.table.opened["udp"] == 1


BULK = 100 * 1024 * 1024

BULK_SCRIPT = """
import hashlib, random, socket, sys
n = int(sys.argv[3])
data = random.Random(7).randbytes(n)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := s.recv(1 << 20):
    got += chunk
print(hashlib.sha256(data).hexdigest(), bytes(got[:32]).hex(), hashlib.sha256(got[32:]).hexdigest(),
      len(got) - 32)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mtu", [65520, 1500])  # 1500: GSO super-segments both ways
async def test_100_mb_each_way_sha256_and_half_close(nsd: HostPort, mtu: int) -> None:
    expected_down = hashlib.sha256(pattern_bytes(BULK)).hexdigest()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_tcp_hash, download=BULK))
        run = await run_sandboxed(
            [PY, "-c", BULK_SCRIPT, str(LOOPBACK_SYNTH), str(port), str(BULK)],
            nsd,
            mtu=mtu,
            limit=150,
        )
        nursery.cancel_scope.cancel()
    assert run.status == 0, run.output
    sent, echoed_digest, down_digest, down_len = run.output.split()
    assert echoed_digest == sent  # the origin hashed exactly what the app uploaded
    assert int(down_len) == BULK and down_digest == expected_down
    (dest,) = run.recorder.report.destinations()
    assert dest.as_dict()["bytes_up"] == BULK


CONCURRENT_SCRIPT = """
import socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
barrier = threading.Barrier(n)
def one(i):
    s = socket.create_connection((host, port), timeout=30)
    barrier.wait(timeout=30)  # all n flows are open at the same time
    msg = (b"flow %d " % i) * 100
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    ok.append(got == msg)
    s.close()
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(ok), len(ok))
"""


@pytest.mark.slow
async def test_200_concurrent_flows(nsd: HostPort) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp_echo)
        run = await run_sandboxed(
            [PY, "-c", CONCURRENT_SCRIPT, str(LOOPBACK_SYNTH), str(port), "200"], nsd
        )
        nursery.cancel_scope.cancel()
    assert run.output.split() == ["200", "200"]
    assert run.stack.table.opened["tcp"] == 200
    assert run.flows_at_exit == 0  # every flow finished cleanly before the app exited


KILL_SCRIPT = """
{py} -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"x" * 5_000_000)
s.recv(1000)
' {host} {port} &
sleep 1
kill -9 $!
sleep 1.5
"""


async def test_app_killed_mid_transfer_cleans_up_flows_and_fds(nsd: HostPort) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_tcp_hash, download=10))
        baseline = run_fds = None
        run = await run_sandboxed(
            ["sh", "-c", KILL_SCRIPT.format(py=PY, host=LOOPBACK_SYNTH, port=port)], nsd
        )
        baseline, run_fds = run.fds_before, run.fds_after
        nursery.cancel_scope.cancel()
    assert run.flows_at_exit == 0  # the app's kernel reset the flow; the table let it go
    assert run.stack.table.opened["tcp"] == 1
    assert run_fds == baseline  # no socket, pipe or TUN fd left behind
    assert not run.stack.streams and not run.stack.udp_socks


# Inside the sandbox 127/8 belongs to lo and is a martian on other interfaces: give lo
# only 127.0.0.1 and allow 127/8 on the TUN, so 127.0.0.2 (an origin on the host) is
# reached through proxy64 like any IPv4 destination would be.
LOCALNET = (
    "ip route del table local local 127.0.0.0/8 dev lo; "
    "ip route add table local local 127.0.0.1 dev lo; "
    "sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.p64tun0.route_localnet=1; "
)


async def test_ipv4_option_maps_ipv4_flows_into_the_prefix(nsd: HostPort) -> None:
    require_tool("curl", "ping")
    script = LOCALNET + (
        "curl -sS -m 10 http://127.0.0.2:{port}/v4; echo tcp=$?; "
        "ping -c 1 -W 3 127.0.0.2 | grep -o '1 received'; "
        f"{PY} -c 'import socket\n"
        'try:\n socket.create_connection(("127.0.0.2", {closed}), timeout=5)\n'
        "except OSError as e: print(e.strerror)'"
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http_hello, "127.0.0.2")
        with trio.socket.socket() as probe:
            await probe.bind(("127.0.0.2", 0))
            closed = probe.getsockname()[1]
        run = await run_sandboxed(
            ["sh", "-c", script.format(port=port, closed=closed)], nsd, ipv4=True
        )
        nursery.cancel_scope.cancel()
    assert "hello /v4\ntcp=0" in run.output
    assert "1 received" in run.output
    assert "Connection refused" in run.output  # the refusal came back as RST, at once
    reached = {d.as_dict()["destination"]: d.as_dict()["reached"]
               for d in run.recorder.report.destinations()}  # fmt: skip
    assert reached[f"127.0.0.2:{port}"] == ["ipv4-literal-mapped"]
    verdicts = {a.destination: a for a in assess_all(run.recorder.report.destinations(), None)}
    translated = verdicts[f"127.0.0.2:{port}"]
    assert translated.verdict is Verdict.CLAT and translated.reached
    assert translated.reason == (
        "an AF_INET TCP socket inside tun run to a literal (1 attempt), translated by --ipv4: "
        "works only with a CLAT (464XLAT)"
    )
