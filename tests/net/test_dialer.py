"""The dialer: egress rules, RFC 8305 timings with MockClock, failures and real loopback."""

from __future__ import annotations

import errno
import os
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
import trio
import trio.testing

from proxy64.destination import Destination, Egress, Reached
from proxy64.errors import (
    DialCause,
    DialError,
    ResolutionError,
    SocksReply,
)
from proxy64.net.dialer import Dialer
from proxy64.proto.rfc6052 import Nat64Prefix
from tests.helpers.fake_net import FakeNet, Outcome
from tests.helpers.fakes import FakeResolver
from tests.helpers.streams import closed_port

WKP = Nat64Prefix.parse("64:ff9b::/96")
NSP = Nat64Prefix.parse("2001:db8:64::/96")


def dialer(
    net: FakeNet,
    resolver: FakeResolver | None = None,
    *,
    prefix: Nat64Prefix = NSP,
    egress: Egress = Egress.NAT64,
    timeout: float = 10.0,
) -> Dialer:
    return Dialer(
        resolver or FakeResolver({}),
        prefix,
        egress,
        connect_timeout=timeout,
        socket_factory=net.socket,
    )


def relative(net: FakeNet, t0: float) -> list[tuple[float, str]]:
    return [(round(t - t0, 3), host) for t, host in net.started]


async def test_ipv4_literal_is_embedded_and_dialed_over_nat64(mock_clock: Any) -> None:
    net = FakeNet({"2001:db8:64::c000:221": Outcome(0.01)})
    dialed = await dialer(net).connect(Destination(IPv4Address("192.0.2.33"), 80))
    assert dialed.remote == (IPv6Address("2001:db8:64::c000:221"), 80)
    assert dialed.reached is Reached.IPV4_LITERAL and dialed.egress is Egress.NAT64
    assert dialed.local == (IPv6Address("::1"), 40000)


async def test_embedded_egress_dials_the_ipv4_address(mock_clock: Any) -> None:
    net = FakeNet({"192.0.2.33": Outcome(0.01)})
    d = dialer(net, egress=Egress.EMBEDDED)
    dialed = await d.connect(Destination(IPv4Address("192.0.2.33"), 80))
    assert dialed.remote == (IPv4Address("192.0.2.33"), 80)
    assert dialed.egress is Egress.EMBEDDED
    assert net.sockets[0].family == socket.AF_INET
    # an IPv6 literal inside the prefix is a NAT64 destination too
    dialed = await d.connect(Destination(IPv6Address("2001:db8:64::c000:221"), 81))
    assert dialed.remote == (IPv4Address("192.0.2.33"), 81)
    assert dialed.reached is Reached.IPV4_LITERAL


@pytest.mark.parametrize("egress", list(Egress))
async def test_an_ipv6_literal_is_an_ipv4_literal_inside_the_prefix_and_native_outside(
    mock_clock: Any, egress: Egress
) -> None:
    """RFC 6052 §2.2: an IPv6 literal under the prefix names the IPv4 embedded in it (a
    literal, dialed the egress's way); any other IPv6 literal is native IPv6."""
    net = FakeNet(
        {"2001:db8:64::c000:221": Outcome(0.01), "192.0.2.33": Outcome(0.01)}
        | {"2001:db8:1::1": Outcome(0.01)}
    )
    d = dialer(net, egress=egress)
    dialed = await d.connect(Destination(IPv6Address("2001:db8:64::c000:221"), 80))
    assert dialed.reached is Reached.IPV4_LITERAL and dialed.egress is egress
    embedded = IPv4Address("192.0.2.33") if egress is Egress.EMBEDDED else None
    assert dialed.remote == (embedded or IPv6Address("2001:db8:64::c000:221"), 80)
    dialed = await d.connect(Destination(IPv6Address("2001:db8:1::1"), 80))
    assert dialed.remote == (IPv6Address("2001:db8:1::1"), 80)
    assert dialed.reached is Reached.NATIVE_IPV6 and dialed.egress is None


async def test_native_ipv6_stays_ipv6_in_embedded_mode(mock_clock: Any) -> None:
    net = FakeNet({"2001:db8:1::1": Outcome(0.01), "198.51.100.1": Outcome(0.01)})
    resolver = FakeResolver(
        {"v6.example": [("2001:db8:1::1", False)], "v4.example": [("2001:db8:64::c633:6401", True)]}
    )
    d = dialer(net, resolver, egress=Egress.EMBEDDED)
    dialed = await d.connect(Destination("v6.example", 443))
    assert dialed.remote == (IPv6Address("2001:db8:1::1"), 443)
    assert dialed.reached is Reached.NATIVE_IPV6 and dialed.egress is None
    dialed = await d.connect(Destination("v4.example", 443))
    assert dialed.remote == (IPv4Address("198.51.100.1"), 443)
    assert dialed.reached is Reached.DNS64 and dialed.egress is Egress.EMBEDDED


@pytest.mark.parametrize("egress", list(Egress))
async def test_loopback_is_this_host_dialed_directly(mock_clock: Any, egress: Egress) -> None:
    """127/8 and ::1 are this host: dialed directly, never embedded and sent to the NAT64
    (which would reach its own loopback, not ours). Under the embedded egress proxy64 is
    the translator, so 127/8 is its IPv4 dial; ::1 is native IPv6 either way."""
    net = FakeNet({"127.0.0.1": Outcome(0.01), "127.1.2.3": Outcome(0.01), "::1": Outcome(0.01)})
    d = dialer(net, prefix=WKP, egress=egress)
    for host in ("127.0.0.1", "127.1.2.3", "64:ff9b::7f00:1"):
        dialed = await d.connect(Destination(ip_address(host), 80))
        expected = IPv4Address("127.0.0.1") if host.startswith("64:") else ip_address(host)
        assert dialed.remote == (expected, 80)
        if egress is Egress.NAT64:
            assert dialed.reached is Reached.THIS_HOST and dialed.egress is None
        else:
            assert dialed.reached is Reached.IPV4_LITERAL and dialed.egress is Egress.EMBEDDED
    dialed = await d.connect(Destination(IPv6Address("::1"), 80))
    assert dialed.remote == (IPv6Address("::1"), 80) and dialed.egress is None
    assert all(not host.startswith("64:") for _, host in net.started)


async def test_wkp_embedded_egress_translates_every_destination(mock_clock: Any) -> None:
    """Under the embedded egress proxy64 is the translator and carries non-global IPv4 too
    (RFC 6052 §3.1 is the translator's choice; --strict-wkp makes it strict)."""
    net = FakeNet({"10.0.0.1": Outcome(0.01), "100.64.0.1": Outcome(0.01)})
    resolver = FakeResolver({"private.example": [("64:ff9b::a00:1", True)]})
    d = dialer(net, resolver, prefix=WKP, egress=Egress.EMBEDDED)
    dialed = await d.connect(Destination("private.example", 80))
    assert dialed.remote == (IPv4Address("10.0.0.1"), 80) and dialed.egress is Egress.EMBEDDED
    assert dialed.strict_nat64_refuses  # the readiness mark
    dialed = await d.connect(Destination(IPv4Address("100.64.0.1"), 80))
    assert dialed.remote == (IPv4Address("100.64.0.1"), 80)
    assert dialed.reached is Reached.IPV4_LITERAL and dialed.strict_nat64_refuses


async def test_wkp_nat64_egress_dials_what_was_asked(mock_clock: Any) -> None:
    """Under the nat64 egress a non-global IPv4 is embedded and dialed: the network's
    translator decides (tayga 0.9.2 carries 100.64/10, AWS carries RFC 1918)."""
    net = FakeNet({"64:ff9b::a00:1": Outcome(0.01), "64:ff9b::a9fe:a9fe": Outcome(0.01)})
    d = dialer(net, prefix=WKP)
    for ipv4, strict in (("10.0.0.1", True), ("169.254.169.254", False)):
        dialed = await d.connect(Destination(IPv4Address(ipv4), 80))
        assert dialed.remote == (WKP.embed(IPv4Address(ipv4)), 80)
        assert dialed.egress is Egress.NAT64 and dialed.strict_nat64_refuses is strict


async def test_rfc8305_5_second_attempt_at_250ms_first_success_wins(mock_clock: Any) -> None:
    net = FakeNet(
        {
            "2001:db8::1": Outcome(5.0),  # hangs
            "2001:db8::2": Outcome(0.1),  # wins at 0.35
            "2001:db8::3": Outcome(0.01),  # started at 0.5? must never start
        }
    )
    resolver = FakeResolver(
        {"he.example": [("2001:db8::1", False), ("2001:db8::2", False), ("2001:db8::3", False)]}
    )
    t0 = trio.current_time()
    dialed = await dialer(net, resolver).connect(Destination("he.example", 443))
    assert dialed.remote[0] == IPv6Address("2001:db8::2")
    assert trio.current_time() - t0 == pytest.approx(0.35, abs=0.002)
    assert relative(net, t0) == [(0.0, "2001:db8::1"), (0.25, "2001:db8::2")]
    loser, winner = net.sockets
    assert loser.closed and not winner.closed  # the loser was cancelled and closed
    await dialed.stream.aclose()
    assert winner.closed


async def test_rfc8305_5_failure_starts_next_attempt_at_once(mock_clock: Any) -> None:
    net = FakeNet(
        {
            "2001:db8::1": Outcome(0.05, errno.ECONNREFUSED),
            "2001:db8::2": Outcome(0.05, errno.EHOSTUNREACH),
            "2001:db8::3": Outcome(0.05),
        }
    )
    resolver = FakeResolver(
        {"he.example": [("2001:db8::1", False), ("2001:db8::2", False), ("2001:db8::3", False)]}
    )
    t0 = trio.current_time()
    dialed = await dialer(net, resolver).connect(Destination("he.example", 443))
    assert dialed.remote[0] == IPv6Address("2001:db8::3")
    assert relative(net, t0) == [(0.0, "2001:db8::1"), (0.05, "2001:db8::2"), (0.1, "2001:db8::3")]


async def test_all_failures_reported_together_with_causes(mock_clock: Any) -> None:
    net = FakeNet(
        {
            "2001:db8::1": Outcome(0.01, errno.ENETUNREACH),
            "2001:db8::2": Outcome(0.01, errno.EHOSTUNREACH),
            "2001:db8::3": Outcome(0.01, errno.ECONNREFUSED),
            "2001:db8::4": Outcome(30.0),  # times out
        }
    )
    resolver = FakeResolver({"bad.example": [(f"2001:db8::{i}", False) for i in range(1, 5)]})
    t0 = trio.current_time()
    with pytest.raises(DialError) as info:
        await dialer(net, resolver, timeout=2.0).connect(Destination("bad.example", 443))
    assert trio.current_time() - t0 == pytest.approx(2.0)
    causes = {str(a.address): a.cause for a in info.value.attempts}
    assert causes == {
        "2001:db8::1": DialCause.NETWORK_UNREACHABLE,
        "2001:db8::2": DialCause.HOST_UNREACHABLE,
        "2001:db8::3": DialCause.REFUSED,
        "2001:db8::4": DialCause.TIMEOUT,
    }
    assert info.value.cause is DialCause.REFUSED  # a host answered: most informative
    assert "bad.example:443" in str(info.value) and "[2001:db8::4]:443 timed out" in str(info.value)
    assert all(s.closed for s in net.sockets)


@pytest.mark.parametrize(
    ("error", "cause", "reply", "status"),
    [
        (errno.ECONNREFUSED, DialCause.REFUSED, SocksReply.CONNECTION_REFUSED, 502),
        (errno.ENETUNREACH, DialCause.NETWORK_UNREACHABLE, SocksReply.NETWORK_UNREACHABLE, 502),
        (errno.EHOSTUNREACH, DialCause.HOST_UNREACHABLE, SocksReply.HOST_UNREACHABLE, 502),
        (None, DialCause.TIMEOUT, SocksReply.TTL_EXPIRED, 504),
        (errno.EPERM, DialCause.OTHER, SocksReply.GENERAL_FAILURE, 502),
    ],
)
async def test_each_dial_cause_maps_to_its_reply(
    mock_clock: Any, error: int | None, cause: DialCause, reply: SocksReply, status: int
) -> None:
    delay = 99.0 if error is None else 0.01
    net = FakeNet({"2001:db8::9": Outcome(delay, error)})
    with pytest.raises(DialError) as info:
        await dialer(net, timeout=1.0).connect(Destination(IPv6Address("2001:db8::9"), 1))
    assert [a.cause for a in info.value.attempts] == [cause]
    assert info.value.socks_reply is reply and info.value.http_status == status
    assert net.sockets[0].closed


async def test_single_candidate_needs_no_nursery(mock_clock: Any, monkeypatch: Any) -> None:
    def no_nursery() -> None:
        raise AssertionError("the one-candidate path opened a nursery")

    monkeypatch.setattr(trio, "open_nursery", no_nursery)
    net = FakeNet({"2001:db8::5": Outcome(0.0)})
    dialed = await dialer(net).connect(Destination(IPv6Address("2001:db8::5"), 443))
    assert dialed.reached is Reached.NATIVE_IPV6


async def test_resolution_error_propagates(mock_clock: Any) -> None:
    with pytest.raises(ResolutionError):
        await dialer(FakeNet({})).connect(Destination("missing.example", 80))


async def test_udp_target_follows_the_same_rules(mock_clock: Any) -> None:
    d = dialer(FakeNet({}), egress=Egress.EMBEDDED)
    target = await d.udp_target(Destination(IPv4Address("192.0.2.1"), 53))
    assert target.remote == (IPv4Address("192.0.2.1"), 53)
    assert target.reached is Reached.IPV4_LITERAL and target.egress is Egress.EMBEDDED
    target = await dialer(FakeNet({})).udp_target(Destination(IPv4Address("192.0.2.1"), 53))
    assert target.remote == (IPv6Address("2001:db8:64::c000:201"), 53)
    assert target.egress is Egress.NAT64


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# --- real loopback ---------------------------------------------------------------------------


async def test_real_refused_port_gives_refused() -> None:
    port = closed_port("127.0.0.1")
    d = Dialer(FakeResolver({}), NSP, Egress.EMBEDDED, connect_timeout=5.0)
    with trio.fail_after(10), pytest.raises(DialError) as info:
        await d.connect(Destination(IPv4Address("127.0.0.1"), port))
    assert info.value.cause is DialCause.REFUSED
    assert info.value.socks_reply is SocksReply.CONNECTION_REFUSED


async def test_real_connect_over_ipv6_loopback_sets_nodelay() -> None:
    listener = (await trio.open_tcp_listeners(0, host="::1"))[0]
    port = listener.socket.getsockname()[1]
    d = Dialer(FakeResolver({}), NSP, Egress.NAT64)
    async with listener:
        with trio.fail_after(10):
            dialed = await d.connect(Destination(ip_address("::1"), port))
            accepted = await listener.accept()
            await dialed.stream.send_all(b"ping")
            assert await accepted.receive_some(10) == b"ping"
        assert isinstance(dialed.stream, trio.SocketStream)
        sock = dialed.stream.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert dialed.reached is Reached.NATIVE_IPV6 and dialed.egress is None
        await dialed.stream.aclose()
        await accepted.aclose()


async def test_socket_creation_failure_is_a_dial_error(mock_clock: Any) -> None:
    def no_fds(family: int, type_: int, proto: int) -> Any:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    d = Dialer(FakeResolver({}), NSP, Egress.NAT64, socket_factory=no_fds)
    with pytest.raises(DialError) as info:
        await d.connect(Destination(IPv6Address("2001:db8::1"), 80))
    assert info.value.cause is DialCause.OTHER
    assert "Too many open files" in info.value.attempts[0].detail


async def test_rfc8305_4_embedded_egress_interleaves_ipv6_and_ipv4(mock_clock: Any) -> None:
    net = FakeNet(
        {
            "2001:db8:1::1": Outcome(9.0),  # native IPv6 hangs
            "2001:db8:1::2": Outcome(9.0),
            "198.51.100.1": Outcome(0.02),  # the embedded IPv4 answers
        }
    )
    resolver = FakeResolver(
        {
            "dual.example": [
                ("2001:db8:1::1", False),
                ("2001:db8:1::2", False),
                ("2001:db8:64::c633:6401", True),
            ]
        }
    )
    t0 = trio.current_time()
    d = dialer(net, resolver, egress=Egress.EMBEDDED)
    dialed = await d.connect(Destination("dual.example", 443))
    # the IPv4 attempt is second (families interleaved), not third
    assert relative(net, t0) == [(0.0, "2001:db8:1::1"), (0.25, "198.51.100.1")]
    assert dialed.remote == (IPv4Address("198.51.100.1"), 443)
    assert dialed.reached is Reached.DNS64 and dialed.egress is Egress.EMBEDDED
    await dialed.stream.aclose()
