"""The TUN stack driven through a fake device (no root): scripted packets in, packets out.

The app side is played by this test with packets built by the codec; the dialer is the
real one (embedded egress, loopback origins) or a scripted one for unreachable cases.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Literal

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy64.destination import Destination, Egress
from proxy64.errors import DialAttempt, DialCause, DialError
from proxy64.flow.segment import ACK, FIN, PSH, RST, SYN
from proxy64.flow.wire import EchoIn, Ignored, Malformed, TcpIn, UdpIn, decode
from proxy64.net.context import ConnectionRecord
from proxy64.net.dial_types import Dialed, UdpTarget
from proxy64.net.dialer import Dialer
from proxy64.net.relay import Relay
from proxy64.net.resolver import Resolution
from proxy64.packet import build_echo, build_tcp, build_udp
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.tun.stack import StackSettings, TunStack
from tests.helpers.fakes import DialsThroughConnect
from tests.helpers.origins import serve_tcp_echo
from tests.helpers.requirements import require_module

APP = IPv6Address("fd64::2")
GW = IPv6Address("fd64::1")
PREFIX = Nat64Prefix.parse("2001:db8:64::/96")
SYNTH = PREFIX.embed(IPv4Address("127.0.0.1"))
FAR = IPv6Address("2001:db8:ffff::1")  # never dialed for real: the scripted dialer refuses


class FakeDevice:
    """The part of TunDevice the stack uses (read_batch, write, vnet) over memory channels;
    TunStack is typed for the concrete TunDevice, hence the arg-type ignores where one is
    passed."""

    vnet = False  # full checksums both ways, so the test can verify every packet

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](1000)
        self.written: list[bytes] = []
        self.event = trio.Event()

    async def read_batch(self, limit: int = 256) -> list[tuple[bytes, bool]]:
        return [(await self.receive.receive(), False)]

    def write(self, packet: bytes) -> bool:
        self.written.append(packet)
        self.event.set()
        self.event = trio.Event()
        return True

    async def next_packet(self, skip_pure_acks: bool = False) -> object:
        with trio.fail_after(5):
            while True:
                while not self.written:
                    await self.event.wait()
                inbound = decode(self.written.pop(0))
                if skip_pure_acks and isinstance(inbound, TcpIn):
                    seg = inbound.segment
                    if seg.flags == ACK and not seg.payload:
                        continue
                return inbound


class ScriptedDialer(DialsThroughConnect):
    """The real dialer for the NAT64 prefix; anything else is 'network unreachable'."""

    def __init__(self) -> None:
        self.real = Dialer(_NoNames(), PREFIX, Egress.EMBEDDED, connect_timeout=3)

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        host = destination.host
        if isinstance(host, IPv6Address) and PREFIX.contains(host):
            return await self.real.connect(destination)
        attempt = DialAttempt(FAR, destination.port, DialCause.NETWORK_UNREACHABLE, "no route")
        raise DialError(str(destination), [attempt])

    async def udp_target(self, destination: Destination, client: str = "") -> UdpTarget:
        return await self.real.udp_target(destination)


class _NoNames:
    def resolve_cached(self, name: str) -> None:
        return None  # nothing cached: connect_now() gives way to connect()

    async def resolve(self, name: str) -> Resolution:
        raise AssertionError("no names in these tests")


class ListRecorder:
    def __init__(self) -> None:
        self.records: list[ConnectionRecord] = []

    def finish(self, record: ConnectionRecord) -> None:
        self.records.append(record)


class EchoResponder:
    async def respond(self, wire: bytes, *, transport: Literal["udp", "tcp"]) -> bytes | None:
        return b"reply:" + wire


def make_stack(device: FakeDevice) -> TunStack:
    return TunStack(
        device,  # type: ignore[arg-type]
        dialer=ScriptedDialer(),
        recorder=ListRecorder(),
        relay=Relay(idle_timeout=10, splice_threshold=None),
        responder=EchoResponder(),
        settings=StackSettings(
            gateway6=GW, network6=IPv6Network("fd64::/64"), gateway4=None, mtu=1500
        ),
    )


def syn(dst: IPv6Address, port: int, sport: int = 40000) -> bytes:
    return build_tcp(APP, dst, sport, port, 1000, 0, SYN, 65535,
                     options=b"\x02\x04\x05\xb4\x01\x03\x03\x07")  # fmt: skip


async def test_refused_destination_answers_rst_to_the_syn() -> None:
    device = FakeDevice()
    stack = make_stack(device)
    with trio.socket.socket() as probe:  # a port with nothing listening
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(stack.serve)
        await device.send.send(syn(SYNTH, port))
        reply = await device.next_packet()
        nursery.cancel_scope.cancel()
    assert isinstance(reply, TcpIn)
    assert reply.segment.flags == RST | ACK and reply.segment.ack == 1001
    assert stack.table.rejected["tcp-reset"] == 1
    assert not stack.table.tcp


async def test_unreachable_destination_answers_icmpv6_no_route() -> None:
    device = FakeDevice()
    stack = make_stack(device)
    async with trio.open_nursery() as nursery:
        await nursery.start(stack.serve)
        packet = syn(FAR, 443)
        await device.send.send(packet)
        with trio.fail_after(5):
            while not device.written:
                await device.event.wait()
        nursery.cancel_scope.cancel()
    error = device.written[0]
    assert error[6] == 58 and error[40:42] == bytes([1, 0])  # RFC 4443 §3.1 code 0
    assert error[48:] == packet  # the SYN is quoted whole
    assert stack.table.rejected["tcp-no_route"] == 1


async def test_tcp_echo_through_stack_and_relay() -> None:
    device = FakeDevice()
    stack = make_stack(device)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp_echo)
        await nursery.start(stack.serve)
        await device.send.send(syn(SYNTH, port))
        synack = await device.next_packet()
        assert isinstance(synack, TcpIn) and synack.segment.flags == SYN | ACK
        assert synack.segment.mss == 1500 - 60 and synack.segment.ack == 1001
        iss = synack.segment.seq
        data = b"hello through the tun"
        await device.send.send(build_tcp(APP, SYNTH, 40000, port, 1001, iss + 1, ACK | PSH,
                                         65535, payload=data))  # fmt: skip
        echoed = await device.next_packet(skip_pure_acks=True)
        assert isinstance(echoed, TcpIn) and echoed.segment.payload == data
        # Half-close from the app: the echo origin finishes and closes, FIN comes back.
        seq = 1001 + len(data)
        ack = iss + 1 + len(data)
        await device.send.send(build_tcp(APP, SYNTH, 40000, port, seq, ack, ACK | FIN, 65535))
        fin = await device.next_packet(skip_pure_acks=True)
        assert isinstance(fin, TcpIn) and fin.segment.flags & FIN
        await device.send.send(build_tcp(APP, SYNTH, 40000, port, seq + 1, ack + 1, ACK, 65535))
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert not stack.table.tcp  # the app's last ACK ended the flow: nothing left
        nursery.cancel_scope.cancel()
    (record,) = stack.recorder.records  # type: ignore[attr-defined]
    assert record.bytes_up == len(data) == record.bytes_down
    assert record.front_end == "tun-tcp"


async def test_dns_on_the_gateway_is_answered_by_the_responder_udp() -> None:
    device = FakeDevice()
    stack = make_stack(device)
    async with trio.open_nursery() as nursery:
        await nursery.start(stack.serve)
        await device.send.send(build_udp(APP, GW, 5353, 53, b"question"))
        answer = await device.next_packet()
        nursery.cancel_scope.cancel()
    assert isinstance(answer, UdpIn)
    assert answer.payload == b"reply:question"
    assert answer.key.app == (GW, 53)  # from the gateway's port 53 back to the app


async def test_echo_to_gateway_answered_locally_and_garbage_counted() -> None:
    device = FakeDevice()
    stack = make_stack(device)
    async with trio.open_nursery() as nursery:
        await nursery.start(stack.serve)
        await device.send.send(b"\x60garbage")
        await device.send.send(build_echo(APP, GW, 9, 1, b"hi"))
        reply = await device.next_packet()
        nursery.cancel_scope.cancel()
    assert isinstance(reply, Ignored)  # an echo reply, which decode() ignores as input
    assert stack.table.dropped["ipv6-truncated"] == 1


async def test_ack_for_unknown_flow_gets_rst_and_ipv4_is_dropped() -> None:
    device = FakeDevice()
    stack = make_stack(device)
    stack.on_packet(build_tcp(APP, SYNTH, 1, 2, 10, 20, ACK, 100))
    stack.on_packet(build_udp(IPv4Address("10.64.0.2"), IPv4Address("192.0.2.1"), 1, 2, b"x"))
    rst = decode(device.written[0])
    assert isinstance(rst, TcpIn) and rst.segment.flags == RST and rst.segment.seq == 20
    assert stack.table.rejected["tcp-no-flow"] == 1
    assert stack.table.dropped["ipv4-disabled"] == 1


valid = st.sampled_from(
    [
        syn(SYNTH, 80),
        build_tcp(APP, SYNTH, 40000, 80, 1001, 5, ACK, 100, payload=b"x" * 40),
        build_udp(APP, GW, 1, 53, b"q" * 12),
        build_echo(APP, GW, 1, 1, b"e"),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=120), st.tuples(valid, st.integers(0, 80),
                                                               st.integers(0, 255))),
                max_size=30))  # fmt: skip
def test_random_packets_never_stop_the_handler(
    packets: list[bytes | tuple[bytes, int, int]],
) -> None:
    trio.run(_feed, packets)


async def _feed(packets: list[bytes | tuple[bytes, int, int]]) -> None:
    device = FakeDevice()
    stack = make_stack(device)  # no nursery: dials and DNS are not started, only decided
    for item in packets:
        if isinstance(item, tuple):
            packet, index, value = item
            data = bytearray(packet)
            data[index % len(data)] = value
            stack.on_packet(bytes(data))
        else:
            stack.on_packet(item)
    for packet in device.written:
        assert isinstance(decode(packet), TcpIn | UdpIn | EchoIn | Ignored | Malformed)


@pytest.mark.parametrize("count", [300])
async def test_syn_flood_is_bounded_and_counted(count: int) -> None:
    device = FakeDevice()
    stack = make_stack(device)
    for n in range(count):
        stack.on_packet(syn(SYNTH, 80, sport=20000 + n))
    assert len(stack.table.half_open) == stack.settings.max_half_open
    assert stack.table.dropped["tcp-syn-flood"] == count - stack.settings.max_half_open


async def test_packet_too_big_lowers_the_flows_mss() -> None:
    from proxy64.packet import build_icmp

    device = FakeDevice()
    stack = make_stack(device)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp_echo)
        await nursery.start(stack.serve)
        await device.send.send(syn(SYNTH, port))
        synack = await device.next_packet()
        assert isinstance(synack, TcpIn)
        iss = synack.segment.seq
        await device.send.send(build_tcp(APP, SYNTH, 40000, port, 1001, iss + 1, ACK, 65535))
        await trio.testing.wait_all_tasks_blocked()
        (flow,) = stack.table.tcp.values()
        assert flow.snd_mss == 1440  # min(the SYN's 1460, our MTU 1500 - 60)
        ours = build_tcp(SYNTH, APP, port, 40000, iss + 1, 1001, ACK, 100, payload=b"x" * 1400)
        ptb = build_icmp(APP, SYNTH, 2, 0, (1280).to_bytes(4, "big"), ours[:1232])
        await device.send.send(ptb)
        await trio.testing.wait_all_tasks_blocked()
        assert flow.snd_mss == 1280 - 60  # RFC 8201: the path MTU minus IPv6 + TCP headers
        nursery.cancel_scope.cancel()


async def test_ipv4_on_link_addresses_are_never_dialed() -> None:
    import dataclasses

    device = FakeDevice()
    base = make_stack(device)
    settings = dataclasses.replace(base.settings, gateway4=IPv4Address("10.64.0.1"))
    stack = TunStack(device,  # type: ignore[arg-type]
                     dialer=base.dialer, recorder=base.recorder, relay=base.relay,
                     responder=base.responder, settings=settings)  # fmt: skip
    app4, neighbour = IPv4Address("10.64.0.2"), IPv4Address("10.64.0.9")
    async with trio.open_nursery() as nursery:
        await nursery.start(stack.serve)
        packet = build_tcp(app4, neighbour, 40000, 80, 1, 0, SYN, 65535)
        await device.send.send(packet)
        with trio.fail_after(5):
            while not device.written:
                await device.event.wait()
        nursery.cancel_scope.cancel()
    error = device.written[0]
    assert error[9] == 1 and error[20:22] == bytes([3, 1])  # ICMP host unreachable
    assert stack.table.rejected["tcp-address_unreachable"] == 1


def hidden_stack(device: FakeDevice) -> TunStack:
    stack = make_stack(device)
    stack.settings = dataclasses.replace(stack.settings, observe4=IPv4Address("192.0.0.1"))
    return stack


def test_hidden_ipv4_syn_and_datagram_are_recorded_and_answered_net_unreachable() -> None:
    """Without --ipv4 an AF_INET socket's first packet (TCP SYN, UDP datagram) is named in
    the report with address and port and answered ICMP 3/0 (RFC 792), read back by
    scapy; a stray segment of no flow (no SYN) is only counted."""
    require_module("scapy", "decodes the ICMP answer independently")
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror

    device = FakeDevice()
    stack = hidden_stack(device)
    app4, dst = IPv4Address("192.0.0.2"), IPv4Address("192.0.2.10")
    stack.on_packet(build_tcp(app4, dst, 40000, 8080, 1000, 0, SYN, 65535))
    stack.on_packet(build_udp(app4, IPv4Address("100.200.0.10"), 40001, 5353, b"hello"))
    stack.on_packet(build_tcp(app4, dst, 40000, 8080, 1001, 5, ACK, 100))
    assert len(device.written) == 2
    tcp_answer, udp_answer = (IP(packet) for packet in device.written)
    for answer in (tcp_answer, udp_answer):
        assert (answer[ICMP].type, answer[ICMP].code) == (3, 0)
        assert (answer.src, answer.dst) == ("192.0.0.1", "192.0.0.2")
    assert tcp_answer[IPerror].dst == "192.0.2.10" and tcp_answer[TCPerror].dport == 8080
    assert udp_answer[UDPerror].dport == 5353
    assert TCP not in tcp_answer and UDP not in udp_answer  # only quoted, inside the error
    records = stack.recorder.records  # type: ignore[attr-defined]
    assert [(r.front_end, str(r.destination)) for r in records] == [
        ("tun-tcp", "192.0.2.10:8080"),
        ("tun-udp", "100.200.0.10:5353"),
    ]
    assert records[0].outcome == (
        "AF_INET TCP to 192.0.2.10:8080 answered network unreachable: no IPv4 on an "
        "IPv6-only network"
    )
    assert stack.table.rejected["ipv4-hidden"] == 2
    assert stack.table.dropped["ipv4-disabled"] == 1
