"""TunTcpStream and TunSocketStream sizes: what one receive_some() hands the relay."""

from __future__ import annotations

import trio

from proxy64.defaults import TUN_RECEIVE_MAX, TUN_SOCKET_NOTSENT_LOWAT
from proxy64.flow.segment import ACK, PSH, Segment
from proxy64.flow.tcp_flow import (
    SegmentArrived,
)
from proxy64.tun.flow_stream import TunTcpStream
from proxy64.tun.socket_stream import TunSocketStream
from tests.helpers.flow_streams import KEY, Recorder, established


async def test_receive_some_without_max_bytes_returns_what_is_queued_in_one_piece() -> None:
    flow = established()
    stream = TunTcpStream(Recorder(), KEY, flow)
    data = bytes(range(256)) * 1200  # 307,200 bytes in five segments
    seq = 101
    for start in range(0, len(data), 65460):
        part = memoryview(data)[start : start + 65460]
        flow.handle(SegmentArrived(Segment(seq, 5001, ACK | PSH, 0xFFFF, part)), 0.0)
        seq += len(part)
    assert await stream.receive_some(1000) == data[:1000]  # max_bytes is still a bound
    got = await stream.receive_some()
    assert got == data[1000:] and len(got) > 65536  # all of it, one relay turn
    big = b"x" * (TUN_RECEIVE_MAX + 5)
    for start in range(0, len(big), 65460):
        part = memoryview(big)[start : start + 65460]
        flow.handle(SegmentArrived(Segment(seq, 5001, ACK | PSH, 0xFFFF, part)), 0.0)
        seq += len(part)
    assert len(await stream.receive_some()) == TUN_RECEIVE_MAX


async def test_socket_reads_are_whole_segments_up_to_the_read_size() -> None:
    """The outbound socket is read in fill_size pieces: whole segments (after completing
    a held partial one), so every segment sent is one read's bytes or a view into them."""
    flow = established()
    recorder = Recorder()
    stream = TunTcpStream(recorder, KEY, flow)
    a, b = trio.socket.socketpair()
    with a, b:
        remote = TunSocketStream(trio.SocketStream(a), read_size=lambda: flow.fill_size(140_000))
        payload = bytes(range(251)) * 1000  # 251,000 bytes
        await b.send(payload[:1000])
        first = await remote.receive_some()
        assert first == payload[:1000]  # what was there: a short read
        await stream.send_all(first)  # held: a partial segment (corked)
        view = memoryview(payload)[1000:160_000]
        while view:
            view = view[await b.send(view) :]
        second = await remote.receive_some()
        # the rest of the held segment plus as many whole segments as fit in 300,000
        size = flow.segment_size
        assert len(second) == (size - 1000) + (140_000 - (size - 1000)) // size * size
        await stream.send_all(second)
        sent = b"".join(bytes(s.payload) for s in recorder.sent)
        assert sent == payload[: len(first) + len(second)]
        assert all(len(s.payload) == size for s in recorder.sent)
        assert isinstance(recorder.sent[-1].payload, memoryview)  # a view: no copy
        assert recorder.sent[-1].payload.obj is second


async def test_socket_stream_sends_a_relay_turn_in_one_write() -> None:
    """TCP_NOTSENT_LOWAT is raised from trio's 16 KiB (a 1 MiB relay turn then fits one
    write); the bytes arrive intact and in order."""
    listener = trio.socket.socket(trio.socket.AF_INET6)
    await listener.bind(("::1", 0))
    listener.listen(1)
    with listener:
        client = await trio.open_tcp_stream("::1", listener.getsockname()[1])
        server, _ = await listener.accept()
        stream = TunSocketStream(client)
        with server, trio.fail_after(20):
            level, name = trio.socket.IPPROTO_TCP, trio.socket.TCP_NOTSENT_LOWAT
            option = client.socket.getsockopt(level, name)
            assert option == TUN_SOCKET_NOTSENT_LOWAT
            data = bytes(range(256)) * 4096  # 1 MiB
            received = bytearray()

            async def drain() -> None:
                while len(received) < len(data):
                    received.extend(await server.recv(1 << 20))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await stream.send_all(data)
            assert bytes(received) == data
            await stream.aclose()
