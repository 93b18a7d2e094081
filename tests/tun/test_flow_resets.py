"""TUN flows pass resets through the relay (RFC 9293 §3.10.4 ABORT): the origin's RST
becomes an RST segment to the app, and the app's RST resets the outbound socket."""

from __future__ import annotations

import socket
import struct

import trio

from proxy64.destination import Destination
from proxy64.flow.segment import ACK, PSH, RST, Segment
from proxy64.flow.tcp_flow import SegmentArrived
from proxy64.net.context import ConnectionRecord
from proxy64.net.relay import relay
from proxy64.tun.flow_stream import TunTcpStream
from proxy64.tun.socket_stream import TunSocketStream
from tests.helpers.flow_streams import KEY, Recorder, established


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with listeners[0].socket:
        port = listeners[0].socket.getsockname()[1]
        ours = await trio.open_tcp_stream("127.0.0.1", port)
        theirs = await listeners[0].accept()
    return ours, theirs


def record() -> ConnectionRecord:
    return ConnectionRecord("tun-tcp", client="[fd64::2]:40000", destination=Destination("x", 80))


async def test_origin_reset_becomes_rst_to_the_app() -> None:
    flow = established()
    recorder = Recorder()
    app = TunTcpStream(recorder, KEY, flow)
    ours, origin = await tcp_pair()
    remote = TunSocketStream(ours, read_size=lambda: 65536)
    rec = record()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay, app, remote, rec)
        await origin.send_all(b"partial answer")
        await trio.sleep(0.05)
        origin.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        origin.socket.close()
        with trio.fail_after(5):
            while rec.outcome == "open":  # noqa: ASYNC110 (the relay sets it as it ends)
                await trio.sleep(0.01)
    assert rec.outcome == "origin reset the connection"
    assert any(seg.flags & RST for seg in recorder.sent), recorder.sent


async def test_app_reset_resets_the_outbound_socket() -> None:
    flow = established()
    app = TunTcpStream(Recorder(), KEY, flow)
    ours, origin = await tcp_pair()
    remote = TunSocketStream(ours, read_size=lambda: 65536)
    rec = record()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay, app, remote, rec)
        flow.handle(SegmentArrived(Segment(101, 5001, ACK | PSH, 0xFFFF, b"hello")), 0.0)
        app.wake()
        assert await origin.receive_some(5) == b"hello"
        flow.handle(SegmentArrived(Segment(106, 5001, RST, 0)), 0.0)
        app.wake()
        with trio.fail_after(5):
            try:
                while await origin.receive_some(100):
                    pass
                error: BaseException | None = None
            except trio.BrokenResourceError as exc:
                error = exc.__cause__
    assert isinstance(error, ConnectionResetError), error
    assert rec.outcome == "client reset the connection"
