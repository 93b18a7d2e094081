"""Failures through the NAT64 network, each with its SOCKS5 reply code (RFC 1928 §6), its
HTTP status and a sentence naming the cause: a refused port, a prefix nobody translates,
a DNS server that is down. Non-global IPv4 under the well-known prefix (RFC 6052 §3.1,
refused by tayga, or by proxy64 with --strict-wkp): test_wkp_translator_decides.py.
"""

from __future__ import annotations

import time

import pytest

from proxy64.errors import ResolutionError, SocksReply
from tests.helpers import socks5_client
from tests.helpers.proxy_process import ProxyProcess
from tests.network import topology as T
from tests.network.clients import (
    NSD,
    proxy_answer,
    socks_socket,
)
from tests.network.netlab import Netlab
from tests.network.proxy import proxy_in


def test_refused_port_is_socks_reply_5(netlab: Netlab, wkp: ProxyProcess) -> None:
    with socks_socket(netlab, wkp) as sock, pytest.raises(socks5_client.Socks5Failure) as info:
        socks5_client.connect(sock, T.V4ONLY, T.REFUSED_PORT)
    assert info.value.reply == SocksReply.CONNECTION_REFUSED


@pytest.mark.parametrize("front_end", ["http-connect", "http-forward"])
def test_refused_port_is_http_502_naming_connection_refused(
    netlab: Netlab, wkp: ProxyProcess, front_end: str
) -> None:
    answer = proxy_answer(netlab, wkp, front_end, f"{T.V4ONLY}:{T.REFUSED_PORT}")
    assert answer.startswith("HTTP/1.1 502 "), answer
    assert "connection refused" in answer.lower(), answer


def test_prefix_without_a_nat64_is_socks_reply_3(netlab: Netlab) -> None:
    """A prefix nobody translates: the gateway answers ICMPv6 no-route, proxy64 says so."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    wrong = T.NETWORK_SPECIFIC_PREFIXES[48]
    args = ("--dns", NSD, "--nat64-prefix", str(wrong), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        with (
            socks_socket(netlab, proxy) as sock,
            pytest.raises(socks5_client.Socks5Failure) as info,
        ):
            socks5_client.connect(sock, T.V4ONLY, T.HTTP_PORT)
        assert info.value.reply == SocksReply.NETWORK_UNREACHABLE
        answer = proxy_answer(netlab, proxy, "http-connect", f"{T.V4ONLY}:{T.HTTP_PORT}")
        assert answer.startswith("HTTP/1.1 502 "), answer
        assert "network unreachable" in answer


def test_dns_server_down_is_a_clear_dns_error_not_a_hang(netlab: Netlab) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    args = ("--dns", f"[{T.DEAD_DNS6}]:53", "--nat64-prefix", str(T.WELL_KNOWN_PREFIX))
    with proxy_in(netlab, *args, "--egress", "nat64") as proxy:
        timeout = ResolutionError(T.V4ONLY, "TIMEOUT")  # 504 / SOCKS 6, with the qname
        for front_end in ("http-forward", "http-connect"):
            started = time.monotonic()
            answer = proxy_answer(netlab, proxy, front_end, f"{T.V4ONLY}:{T.HTTP_PORT}")
            elapsed = time.monotonic() - started
            assert answer.startswith(f"HTTP/1.1 {timeout.http_status} "), answer
            assert "DNS" in answer and T.V4ONLY in answer, answer
            assert elapsed < 12, f"{front_end} took {elapsed:.1f}s"
        with (
            socks_socket(netlab, proxy) as sock,
            pytest.raises(socks5_client.Socks5Failure) as info,
        ):
            socks5_client.connect(sock, T.V4ONLY, T.HTTP_PORT)
        assert info.value.reply == timeout.socks_reply
