"""The HTTP front end bounds a dial by --connect-timeout (ProxyContext.connect_timeout)
plus HTTP_DIAL_GRACE, as the SOCKS front end does through the dialer: a dial the user
allowed 30 s is not cut short, and one that never returns is answered 504 once the
configured bound has passed. A mock clock: the seconds are virtual."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import trio
import trio.testing

from proxy64.defaults import CONNECT_TIMEOUT, HTTP_DIAL_GRACE
from proxy64.destination import Destination
from proxy64.net.dial_types import Dialed
from tests.helpers.fakes import FakeDialer, ListRecorder, make_context
from tests.helpers.http_proxy import loopback_pair, serve_socket
from tests.helpers.streams import receive_head


@dataclasses.dataclass
class SlowDialer(FakeDialer):
    """Connects after `delay` seconds of (virtual) time."""

    delay: float = 0.0

    async def connect(self, destination: Destination, client: str = "") -> Dialed:
        await trio.sleep(self.delay)
        return await super().connect(destination, client)


async def echo(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def connect_through(
    dialer: FakeDialer, connect_timeout: float, port: int, host: str = "127.0.0.1"
) -> bytes:
    """A CONNECT to host:port through the HTTP proxy's executor; the answer's head."""
    ctx = dataclasses.replace(make_context(dialer, ListRecorder()), connect_timeout=connect_timeout)
    ours, theirs = loopback_pair()
    ours.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    client = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_socket, ctx, theirs)
        answer = await receive_head(client, short_ok=True)
        await client.send_eof()
        while await client.receive_some(65536):
            pass
    await client.aclose()
    return answer


@pytest.mark.parametrize("connect_timeout", [CONNECT_TIMEOUT + HTTP_DIAL_GRACE + 15, 60.0])
async def test_a_dial_within_connect_timeout_is_not_cut_short(
    connect_timeout: float, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    delay = CONNECT_TIMEOUT + HTTP_DIAL_GRACE + 10  # past the bound for the default
    dialer = SlowDialer(delay=delay)
    start = trio.current_time()
    answer = await connect_through(dialer, connect_timeout, port)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert trio.current_time() - start >= delay


@pytest.mark.parametrize("connect_timeout", [2.0, CONNECT_TIMEOUT, 40.0])
async def test_a_dial_that_never_returns_is_504_after_connect_timeout_and_grace(
    connect_timeout: float, autojump_clock: trio.testing.MockClock
) -> None:
    dialer = FakeDialer(hang={"slow.p64.test"})
    start = trio.current_time()
    answer = await connect_through(dialer, connect_timeout, 9, "slow.p64.test")
    elapsed = trio.current_time() - start
    assert answer.startswith(b"HTTP/1.1 504 "), answer
    assert connect_timeout + HTTP_DIAL_GRACE <= elapsed < connect_timeout + HTTP_DIAL_GRACE + 1
