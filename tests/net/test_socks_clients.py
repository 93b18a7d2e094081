"""Real SOCKS clients against the handler: curl (socks5, socks5h, socks4, socks4a, with and
without a password), proxychains4 (proxy_dns on and off), python-socks and httpx.

The proxy runs behind a trio listener on 127.0.0.1 with a fake dialer that reaches the
loopback origins only; "origin.p64.test" is a name only that dialer knows, so a client
that resolved it itself would fail.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import httpx
import pytest
import trio
from python_socks import ProxyError
from python_socks.async_.trio import Proxy as TrioProxy

from proxy64.destination import Destination
from tests.helpers.curl import curl_async_text
from tests.helpers.fakes import FakeDialer, ListRecorder, make_context
from tests.helpers.origins import serve_http_hello, serve_tcp_echo
from tests.helpers.requirements import require_tool, tool_path
from tests.helpers.socks_fronts import serve_socks

NAMES: dict[str, IPv4Address | IPv6Address] = {
    "origin.p64.test": IPv4Address("127.0.0.1"),
    "origin6.p64.test": IPv6Address("::1"),
}
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


async def start(
    nursery: trio.Nursery, credentials: dict[str, str] | None = None
) -> tuple[int, FakeDialer, ListRecorder]:
    dialer = FakeDialer(names=dict(NAMES))
    recorder = ListRecorder()
    ctx = make_context(dialer, recorder, credentials=credentials)
    port, _ = await serve_socks(nursery, ctx)
    return port, dialer, recorder


async def run(command: Sequence[str]) -> tuple[int, str, str]:
    with trio.fail_after(20):
        done = await trio.run_process(
            list(command), capture_stdout=True, capture_stderr=True, check=False, env=CLEAN_ENV
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize(
    ("option", "host", "expected"),
    [
        ("--socks5", "127.0.0.1", Destination(IPv4Address("127.0.0.1"), 0)),
        ("--socks5-hostname", "origin.p64.test", Destination("origin.p64.test", 0)),
        ("--socks5-hostname", "[::1]", Destination(IPv6Address("::1"), 0)),
        ("--socks4", "127.0.0.1", Destination(IPv4Address("127.0.0.1"), 0)),
        ("--socks4a", "origin.p64.test", Destination("origin.p64.test", 0)),
    ],
)
async def test_curl(nursery: trio.Nursery, option: str, host: str, expected: Destination) -> None:
    origin_host = "::1" if host == "[::1]" else "127.0.0.1"
    origin = await nursery.start(serve_http_hello, origin_host)
    port, dialer, recorder = await start(nursery)
    code, out, err = await curl_async_text(
        option, f"127.0.0.1:{port}", f"http://{host}:{origin}/path"
    )
    assert (code, out) == (0, "hello /path\n"), err
    assert dialer.dialed == [Destination(expected.host, origin)]
    with trio.fail_after(5):
        (record,) = await recorder.wait_for(1)
    assert record.front_end == ("socks4" if "socks4" in option else "socks5")
    assert record.outcome == "ok"


async def test_curl_with_password(nursery: trio.Nursery) -> None:
    origin = await nursery.start(serve_http_hello)
    port, _, recorder = await start(nursery, credentials={"alice": "s3cret"})
    url = f"http://origin.p64.test:{origin}/auth"
    code, out, err = await curl_async_text("-x", f"socks5h://alice:s3cret@127.0.0.1:{port}", url)
    assert (code, out) == (0, "hello /auth\n"), err
    code, out, err = await curl_async_text("-x", f"socks5h://alice:nope@127.0.0.1:{port}", url)
    assert code != 0 and out == ""
    assert "rejected by the SOCKS5 server (1 1)" in err, err  # RFC 1929 status 1
    code, out, err = await curl_async_text("-x", f"socks5h://127.0.0.1:{port}", url)
    assert code != 0 and out == ""
    code, out, err = await curl_async_text("--socks4a", f"127.0.0.1:{port}", url)
    assert code != 0 and out == ""
    with trio.fail_after(5):
        records = await recorder.wait_for(4)
    assert sum(r.outcome == "ok" for r in records) == 1


async def test_curl_sees_host_unreachable_for_nxdomain(nursery: trio.Nursery) -> None:
    port, _, _ = await start(nursery)
    code, _, err = await curl_async_text(
        "--socks5-hostname", f"127.0.0.1:{port}", "http://nx.p64.test/"
    )
    assert code == 97, err  # CURLE_PROXY
    assert "(4)" in err or "unreachable" in err.lower(), err


@pytest.mark.parametrize("proxy_dns", [True, False])
async def test_proxychains4_curl(nursery: trio.Nursery, tmp_path: Path, proxy_dns: bool) -> None:
    require_tool("proxychains4", "curl")
    origin = await nursery.start(serve_http_hello)
    port, dialer, _ = await start(nursery)
    conf = tmp_path / "proxychains.conf"
    conf.write_text(
        "strict_chain\n"
        + ("proxy_dns\nremote_dns_subnet 224\n" if proxy_dns else "")
        + "tcp_read_time_out 10000\ntcp_connect_time_out 5000\n"
        + f"[ProxyList]\nsocks5 127.0.0.1 {port}\n"
    )
    host = "origin.p64.test" if proxy_dns else "127.0.0.1"  # without proxy_dns curl resolves
    command = [tool_path("proxychains4"), "-q", "-f", str(conf), tool_path("curl")]
    code, out, err = await run([*command, "-sS", "--max-time", "10", f"http://{host}:{origin}/pc"])
    assert (code, out) == (0, "hello /pc\n"), err
    expected = Destination("origin.p64.test" if proxy_dns else IPv4Address("127.0.0.1"), origin)
    assert dialer.dialed == [expected]


async def test_python_socks_trio_socks5_and_socks4(nursery: trio.Nursery) -> None:
    echo = await nursery.start(serve_tcp_echo)
    port, dialer, _ = await start(nursery, credentials={"bob": "pw"})
    with trio.fail_after(10):
        proxy = TrioProxy.from_url(f"socks5://bob:pw@127.0.0.1:{port}", rdns=True)
        sock = await proxy.connect("origin.p64.test", echo)
        stream = trio.SocketStream(sock)
        async with stream:
            await stream.send_all(b"python-socks")
            assert await stream.receive_some(100) == b"python-socks"
        with pytest.raises(ProxyError):
            await TrioProxy.from_url(f"socks5://bob:bad@127.0.0.1:{port}").connect("x.test", 1)
    assert dialer.dialed == [Destination("origin.p64.test", echo)]


async def test_httpx_over_socks5(nursery: trio.Nursery) -> None:
    origin = await nursery.start(serve_http_hello)
    port, dialer, _ = await start(nursery)

    def fetch() -> tuple[int, str]:
        with httpx.Client(proxy=f"socks5://127.0.0.1:{port}", timeout=10) as client:
            response = client.get(f"http://127.0.0.1:{origin}/httpx")
            return response.status_code, response.text

    with trio.fail_after(15):
        status, text = await trio.to_thread.run_sync(fetch)
    assert (status, text) == (200, "hello /httpx\n")
    assert dialer.dialed == [Destination(IPv4Address("127.0.0.1"), origin)]
