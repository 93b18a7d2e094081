"""Run a command in the TUN sandbox with the stack in this process, so tests can inspect
the flow table, the readiness report and this process's open fds afterwards.

Everything is real: the namespace, the TUN device, the DNS64 resolver asking an NSD on a
unique 127.x address, the dialer with the embedded egress under a network-specific
prefix (so origins on 127.0.0.1 are reachable; 64:ff9b::/96 would refuse loopback,
RFC 6052 §3.1).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import trio

from proxy64.config import HostPort, ResolverSettings
from proxy64.defaults import (
    TUN_GATEWAY,
    TUN_GATEWAY_V4,
    TUN_HIDDEN_V4_GATEWAY,
    TUN_MTU,
    TUN_NETWORK,
)
from proxy64.destination import Egress
from proxy64.net.dialer import Dialer
from proxy64.net.dns_server import DNS64Responder
from proxy64.net.recorder import Recorder
from proxy64.net.relay import Relay
from proxy64.net.resolver import DNS64Resolver
from proxy64.policy import DestinationPolicy
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.tun.namespace import SandboxSettings, run_in_namespace
from proxy64.tun.stack import StackSettings, TunStack

PREFIX = Nat64Prefix.parse("2001:db8:64::/96")
LOOPBACK_SYNTH = PREFIX.embed(IPv4Address("127.0.0.1"))  # 2001:db8:64::7f00:1
RUN_TIMEOUT = 90.0

ZONE = """$ORIGIN tun.test.
$TTL 300
@ IN SOA ns.tun.test. host.tun.test. 1 3600 600 86400 60
@ IN NS ns.tun.test.
ns IN A 127.0.0.1
v4only IN A 127.0.0.1
v6only IN AAAA ::1
dual IN A 127.0.0.1
dual IN AAAA ::1
"""


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class SandboxRun:
    status: int
    output: str
    stack: TunStack
    recorder: Recorder
    fds_before: int
    fds_at_exit: int  # when CMD exited, before the stack was cancelled
    flows_at_exit: int
    fds_after: int = 0
    notes: dict[str, object] = field(default_factory=dict)


async def run_sandboxed(
    cmd: list[str],
    dns: HostPort,
    *,
    mtu: int = TUN_MTU,
    ipv4: bool = False,
    limit: float = RUN_TIMEOUT,
    policy: DestinationPolicy | None = None,
) -> SandboxRun:
    resolver = DNS64Resolver(ResolverSettings(servers=(dns,), prefix=PREFIX), PREFIX)
    dialer = Dialer(resolver, PREFIX, Egress.EMBEDDED, connect_timeout=5, policy=policy)
    recorder = Recorder()
    state: dict[str, object] = {}
    fds_before = fd_count()

    async def serve(device: object, done: trio.Event) -> None:
        stack = TunStack(
            device,  # type: ignore[arg-type]
            dialer=dialer,
            recorder=recorder,
            relay=Relay(idle_timeout=60),
            responder=DNS64Responder(resolver),
            settings=StackSettings(
                gateway6=IPv6Address(TUN_GATEWAY),
                network6=IPv6Network(TUN_NETWORK),
                gateway4=IPv4Address(TUN_GATEWAY_V4) if ipv4 else None,
                mtu=mtu,
                observe4=None if ipv4 else IPv4Address(TUN_HIDDEN_V4_GATEWAY),
            ),
        )
        state["stack"] = stack
        async with trio.open_nursery() as nursery:
            await nursery.start(stack.serve)
            await done.wait()
            recorder.report.a_lookups.update(stack.names.a_lookups)
            await trio.sleep(0.05)  # let the last packets of a dying app be processed
            state["fds_at_exit"] = fd_count()
            state["flows_at_exit"] = len(stack.table)
            nursery.cancel_scope.cancel()

    with tempfile.TemporaryFile() as out:
        with trio.fail_after(limit):
            status = await run_in_namespace(
                cmd, SandboxSettings(mtu=mtu, ipv4=ipv4), serve, stdout=out.fileno()
            )
        out.seek(0)
        output = out.read().decode(errors="replace")
    return SandboxRun(
        status=status,
        output=output,
        stack=state["stack"],  # type: ignore[arg-type]
        recorder=recorder,
        fds_before=fds_before,
        fds_at_exit=int(state["fds_at_exit"]),  # type: ignore[call-overload]
        flows_at_exit=int(state["flows_at_exit"]),  # type: ignore[call-overload]
        fds_after=fd_count(),
    )
