"""SOCKS5 UDP ASSOCIATE (RFC 1928 §7) with a plain-socket client against a UDP echo."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import trio

from proxy64.destination import Destination
from proxy64.net.context import ConnectionRecord
from proxy64.net.socks_udp import serve_udp_association
from proxy64.proto.socks5 import Method, MethodSelection, Request, Socks5Server
from tests.helpers.fakes import FakeDialer, ListRecorder, make_context
from tests.helpers.origins import serve_udp_echo
from tests.helpers.socks_fronts import serve_socks
from tests.helpers.streams import receive_exactly

NAMES: dict[str, IPv4Address | IPv6Address] = {
    "origin.p64.test": IPv4Address("127.0.0.1"),
    "origin6.p64.test": IPv6Address("::1"),
}
QUIET = 0.3  # seconds a dropped datagram is given to (not) come back


def header(host: IPv4Address | IPv6Address | str, port: int, frag: int = 0) -> bytes:
    if isinstance(host, IPv4Address):
        address = b"\x01" + host.packed
    elif isinstance(host, IPv6Address):
        address = b"\x04" + host.packed
    else:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    return b"\x00\x00" + bytes([frag]) + address + port.to_bytes(2, "big")


async def associate(
    proxy_host: str, proxy_port: int, requested: bytes = b"\x01" + bytes(6)
) -> tuple[trio.SocketStream, tuple[str, int]]:
    """UDP ASSOCIATE; returns the control stream and the relay's (host, port)."""
    control = await trio.open_tcp_stream(proxy_host, proxy_port)
    await control.send_all(b"\x05\x01\x00")
    assert await receive_exactly(control, 2) == b"\x05\x00"
    await control.send_all(b"\x05\x03\x00" + requested)
    head = await receive_exactly(control, 4)
    assert head[:3] == b"\x05\x00\x00", head
    size = 4 if head[3] == 1 else 16
    bound = await receive_exactly(control, size + 2)
    return control, (str(ip_address(bound[:size])), int.from_bytes(bound[size:], "big"))


async def exchange(
    sock: trio.socket.SocketType, relay: tuple[str, int], datagram: bytes
) -> bytes | None:
    await sock.sendto(datagram, relay)
    with trio.move_on_after(QUIET if datagram[2] else 5):
        data, source = await sock.recvfrom(70000)
        assert source[:2] == relay  # answers come from the relay socket
        return data
    return None


async def start(nursery: trio.Nursery, host: str = "127.0.0.1") -> tuple[int, ListRecorder]:
    recorder = ListRecorder()
    ctx = make_context(FakeDialer(names=dict(NAMES)), recorder)
    port, _ = await serve_socks(nursery, ctx, host)
    return port, recorder


async def test_rfc1928_7_udp_associate_ipv4(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_udp_echo, "127.0.0.1")
    port, recorder = await start(nursery)
    with trio.fail_after(10):
        control, relay = await associate("127.0.0.1", port)
        assert relay[0] == "127.0.0.1" and relay[1] != port
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            await client.bind(("127.0.0.1", 0))
            to_ip = header(IPv4Address("127.0.0.1"), echo)
            assert await exchange(client, relay, to_ip + b"hello") == to_ip + b"hello"
            # the reply names the source as the client addressed it: by name
            to_name = header("origin.p64.test", echo)
            assert await exchange(client, relay, to_name + b"named") == to_name + b"named"
            # fragments are dropped (RFC 1928 §7), nothing comes back
            await client.sendto(header(IPv4Address("127.0.0.1"), echo, frag=1) + b"x", relay)
            # an unknown name is dropped, and so is a malformed header
            await client.sendto(header("nx.p64.test", echo) + b"x", relay)
            await client.sendto(b"\x00\x00", relay)
            with trio.move_on_after(QUIET):
                data, _ = await client.recvfrom(70000)
                raise AssertionError(f"a dropped datagram was answered: {data!r}")
            big = b"B" * 60000
            assert await exchange(client, relay, to_ip + big) == to_ip + big
        await control.aclose()  # the association dies with its TCP connection
        (record,) = await recorder.wait_for(1)
    assert record.front_end == "udp"
    assert record.outcome == "ok"
    assert record.destination == Destination(IPv4Address("127.0.0.1"), echo)
    assert record.bytes_up == record.bytes_down == 5 + 5 + 60000


async def test_udp_associate_ipv6_client_and_origin(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_udp_echo, "::1")
    echo4 = await nursery.start(serve_udp_echo, "127.0.0.1")
    port, recorder = await start(nursery, "::1")
    with trio.fail_after(10):
        control, relay = await associate("::1", port)
        assert relay[0] == "::1"
        with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            await client.bind(("::1", 0))
            to_name = header("origin6.p64.test", echo)
            assert await exchange(client, relay, to_name + b"six") == to_name + b"six"
            # an IPv6 client reaching an IPv4 destination: the outbound socket is IPv4
            to_four = header("origin.p64.test", echo4)
            assert await exchange(client, relay, to_four + b"four") == to_four + b"four"
        await control.aclose()
        (record,) = await recorder.wait_for(1)
    assert record.remote == (IPv6Address("::1"), echo)  # the first datagram's
    assert (record.bytes_up, record.bytes_down) == (7, 7)


async def test_rfc1928_7_only_the_announced_client_port(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_udp_echo, "127.0.0.1")
    port, recorder = await start(nursery)
    with trio.fail_after(10):
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with client, other:
            await client.bind(("127.0.0.1", 0))
            await other.bind(("127.0.0.1", 0))
            announced = b"\x01" + IPv4Address("127.0.0.1").packed
            announced += client.getsockname()[1].to_bytes(2, "big")
            control, relay = await associate("127.0.0.1", port, announced)
            to_ip = header(IPv4Address("127.0.0.1"), echo)
            assert await exchange(other, relay, to_ip[:2] + b"\x01" + to_ip[3:]) is None
            await other.sendto(to_ip + b"intruder", relay)
            assert await exchange(client, relay, to_ip + b"me") == to_ip + b"me"
            with trio.move_on_after(QUIET):
                data, _ = await other.recvfrom(70000)
                raise AssertionError(f"a datagram from another port was relayed: {data!r}")
        await control.aclose()
        (record,) = await recorder.wait_for(1)
    assert record.bytes_up == 2


async def test_udp_association_idle_timeout() -> None:
    recorder = ListRecorder()
    ctx = make_context(FakeDialer(names=dict(NAMES)), recorder)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with trio.fail_after(5):
        client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        server = await listeners[0].accept()
        machine = Socks5Server()
        machine.receive_data(b"\x05\x01\x00\x05\x03\x00\x01" + bytes(6))
        machine.next_event()
        machine.send(MethodSelection(Method.NO_AUTH))
        request = machine.next_event()
        assert isinstance(request, Request)
        record = ConnectionRecord(front_end="udp", client="test")
        start = trio.current_time()
        await serve_udp_association(server, machine, request.destination, ctx, record, idle=0.3)
        assert 0.25 < trio.current_time() - start < 2
        assert (await receive_exactly(client, 10))[:2] == b"\x05\x00"
    assert record.outcome == "UDP association idle for 0.3 s, closed"
    for stream in (client, server, *listeners):
        await stream.aclose()
