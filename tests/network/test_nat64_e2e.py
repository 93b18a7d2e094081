"""End to end through a real NAT64: proxy64 in the IPv6-only client namespace, tayga on the
gateway, an IPv4-only origin. curl (in the client namespace) uses proxy64's SOCKS5 and
HTTP front ends; the origin reports the peer it saw, which must be from tayga's pool.

RFC 7050 (prefix discovery through Unbound's DNS64), RFC 6052 (every prefix length, §3.1
refusal), RFC 6147 (proxy64's own synthesis from NSD answers), RFC 1928 (reply codes,
UDP ASSOCIATE).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv6Network, ip_address
from types import ModuleType

import pytest

from proxy64.errors import AddressMappingError, Proxy64Error, ResolutionError, SocksReply
from tests.helpers.proxy_process import ProxyProcess
from tests.helpers.requirements import require_tool, tool_path
from tests.network import socks5_client
from tests.network import topology as T
from tests.network.netlab import ORIGIN_SERVER, REPO, Netlab, socket_in
from tests.network.proxy import proxy_in, run_proxy64_in, start_proxy_in

NSD = f"[{T.NSD6}]:53"
UNBOUND = f"[{T.UNBOUND6}]:53"
ALL_PREFIXES = [T.WELL_KNOWN_PREFIX, *T.NETWORK_SPECIFIC_PREFIXES.values()]
PREFIX_IDS = [f"len{p.prefixlen}-{p.network_address}" for p in ALL_PREFIXES]
FRONT_ENDS = ("socks5h", "http-connect", "http-forward")
TARGETS = {
    "name-A-only": T.V4ONLY,
    "ipv4-literal": str(T.ORIGIN4),
    "cname-chain": T.CNAME_CHAIN,
}


def hostport(address: tuple[str, int] | None) -> str:
    assert address is not None, "listener is off"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fetch(lab: Netlab, proxy: ProxyProcess, front_end: str, url: str) -> str:
    """curl URL through proxy64's front end; returns the body, fails the test on error."""
    if front_end == "socks5h":
        args = ["--socks5-hostname", hostport(proxy.socks)]
    elif front_end == "http-connect":
        args = ["-p", "-x", f"http://{hostport(proxy.http)}"]
    else:
        args = ["-x", f"http://{hostport(proxy.http)}"]
    result = lab.curl("--fail-with-body", *args, url)
    assert result.returncode == 0, (
        f"curl {front_end} {url}: exit {result.returncode} {result.stderr}{result.stdout}\n"
        f"proxy64 log:\n{proxy.output()[-2000:]}"
    )
    return result.stdout


def origin_report(body: str) -> tuple[str, str]:
    """("v4"|"v6", peer address) from the origin's "origin=L peer=A path=P" line."""
    fields = dict(part.split("=", 1) for part in body.split())
    return fields["origin"], fields["peer"]


def assert_through_tayga(body: str) -> None:
    label, peer = origin_report(body)
    assert label == "v4"
    assert ip_address(peer) in T.DYNAMIC_POOL, f"origin saw {peer}, not tayga's pool"


@pytest.fixture(scope="module")
def wkp_proxy(netlab: Netlab) -> Iterator[ProxyProcess]:
    """proxy64 doing its own DNS64 against NSD with the well-known prefix."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    args = ("--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        yield proxy


@pytest.fixture
def wkp(netlab: Netlab, wkp_proxy: ProxyProcess) -> ProxyProcess:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)  # another test may have switched tayga
    return wkp_proxy


def proxy_answer(lab: Netlab, proxy: ProxyProcess, front_end: str, target: str) -> str:
    """The proxy's whole answer to one request, read raw: curl hides a failed CONNECT's body."""
    if front_end == "http-connect":
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    else:
        request = f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    assert proxy.http is not None
    with socket_in(lab.client, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(proxy.http)
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                break
    return answer.decode(errors="replace")


def socks_socket(lab: Netlab, proxy: ProxyProcess) -> socket.socket:
    sock = socket_in(lab.client, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(socks5_client.TIMEOUT)
    assert proxy.socks is not None
    sock.connect(proxy.socks)
    return sock


# --- reaching the IPv4-only origin ---------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_reaches_ipv4_only_origin_through_tayga(
    netlab: Netlab, wkp: ProxyProcess, front_end: str, target: str
) -> None:
    body = fetch(netlab, wkp, front_end, f"http://{target}/{front_end}")
    assert_through_tayga(body)
    assert f"path=/{front_end}" in body


@pytest.mark.parametrize("prefix", ALL_PREFIXES, ids=PREFIX_IDS)
def test_rfc7050_prefix_discovered_through_network_dns64(
    netlab: Netlab, prefix: IPv6Network
) -> None:
    """--nat64-prefix auto, DNS from the namespace's resolv.conf (Unbound's DNS64)."""
    netlab.use_prefix(prefix)
    with proxy_in(netlab, "--nat64-prefix", "auto", "--egress", "auto") as proxy:
        assert IPv6Network(proxy.prefix) == prefix, proxy.startup_line
        assert proxy.egress == "nat64"
        assert "RFC 7050" in proxy.why
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.V4ONLY}/auto"))
        assert_through_tayga(fetch(netlab, proxy, "http-forward", f"http://{T.ORIGIN4}/lit"))


@pytest.mark.parametrize("prefix", ALL_PREFIXES, ids=PREFIX_IDS)
def test_rfc6052_configured_prefix_with_own_dns64(netlab: Netlab, prefix: IPv6Network) -> None:
    """proxy64 synthesizes from NSD's A records with the prefix given by hand."""
    netlab.use_prefix(prefix)
    args = ("--dns", NSD, "--nat64-prefix", str(prefix), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        assert IPv6Network(proxy.prefix) == prefix
        assert_through_tayga(fetch(netlab, proxy, "http-connect", f"http://{T.V4ONLY}/own"))
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.CNAME_CHAIN}/own"))
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.ORIGIN4}/own"))


def test_rfc6052_3_1_network_specific_prefix_reaches_private_ipv4(netlab: Netlab) -> None:
    """What the well-known prefix must refuse, a network-specific prefix carries."""
    prefix = T.NETWORK_SPECIFIC_PREFIXES[96]
    netlab.use_prefix(prefix)
    args = ("--dns", NSD, "--nat64-prefix", str(prefix), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        assert_through_tayga(fetch(netlab, proxy, "socks5h", f"http://{T.PRIVATE}/nsp"))


def load_origin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("origin_server", ORIGIN_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def proxy_args(proxy: ProxyProcess, front_end: str) -> list[str]:
    if front_end == "socks5h":
        return ["--socks5-hostname", hostport(proxy.socks)]
    if front_end == "http-connect":
        return ["-p", "-x", f"http://{hostport(proxy.http)}"]
    return ["-x", f"http://{hostport(proxy.http)}"]


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_binary_transfers_intact_both_ways(
    netlab: Netlab, wkp: ProxyProcess, front_end: str
) -> None:
    """8 MiB down and 4 MiB of random bytes up through proxy64 and tayga, by SHA-256."""
    size_down, size_up = 8 * 1024 * 1024, 4 * 1024 * 1024
    expected = hashlib.sha256(load_origin_module().pattern(size_down)).hexdigest()
    target = netlab.workdir / f"down-{front_end}.bin"
    url = f"http://{T.V4ONLY}/bytes/{size_down}"
    result = netlab.curl("--fail", "-o", str(target), *proxy_args(wkp, front_end), url, timeout=60)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    upload = netlab.workdir / f"up-{front_end}.bin"
    payload = os.urandom(size_up)
    upload.write_bytes(payload)
    result = netlab.curl(
        "--fail",
        "--data-binary",
        f"@{upload}",
        "-H",
        "Content-Type: application/octet-stream",
        *proxy_args(wkp, front_end),
        f"http://{T.V4ONLY}/upload",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    fields = dict(part.split("=", 1) for part in result.stdout.split())
    assert fields["sha256"] == hashlib.sha256(payload).hexdigest()
    assert int(fields["length"]) == size_up
    assert ip_address(fields["peer"]) in T.DYNAMIC_POOL


def test_proxychains4_app_reaches_origin(netlab: Netlab, wkp: ProxyProcess) -> None:
    """An unmodified app (curl without proxy options) under proxychains4 pointed at proxy64."""
    require_tool("proxychains4")
    assert wkp.socks is not None
    conf = netlab.workdir / "proxychains.conf"
    conf.write_text(
        "strict_chain\nproxy_dns\nremote_dns_subnet 224\ntcp_read_time_out 15000\n"
        f"tcp_connect_time_out 8000\n[ProxyList]\nsocks5 {wkp.socks[0]} {wkp.socks[1]}\n"
    )
    for url in (f"http://{T.V4ONLY}/chains", f"http://{T.ORIGIN4}/chains"):
        argv = [tool_path("proxychains4"), "-q", "-f", str(conf), tool_path("curl")]
        result = netlab.run(
            netlab.client, [*argv, "-sS", "--max-time", "10", url], check=False, timeout=20
        )
        assert result.returncode == 0, result.stderr
        assert_through_tayga(result.stdout)


# --- native IPv6 and --synthesize-all ------------------------------------------------------


def test_native_aaaa_goes_native(netlab: Netlab, wkp: ProxyProcess) -> None:
    label, peer = origin_report(fetch(netlab, wkp, "socks5h", f"http://{T.DUAL}/native"))
    assert (label, ip_address(peer)) == ("v6", T.CLIENT6)  # no translation on the way


def test_synthesize_all_forces_nat64_for_native_aaaa(netlab: Netlab) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    args = ("--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX), "--synthesize-all")
    with proxy_in(netlab, *args, "--egress", "nat64") as proxy:
        for front_end in FRONT_ENDS:
            assert_through_tayga(fetch(netlab, proxy, front_end, f"http://{T.DUAL}/all"))


# --- failures, reported with the right code and a sentence ---------------------------------


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


def expected_private_refusal(target: str) -> Proxy64Error:
    """What refusing PRIVATE_ORIGIN4 under the well-known prefix looks like (RFC 6052 §3.1).

    An IPv4 literal cannot be embedded: AddressMappingError (SOCKS 2, HTTP 403). A name
    whose only A records are non-global has no usable address: the resolver's NODATA,
    with the §3.1 reason in the detail (SOCKS 4, HTTP 502). Either way before dialing.
    """
    if target == str(T.PRIVATE_ORIGIN4):
        return AddressMappingError("non-global IPv4 under the well-known prefix")
    return ResolutionError(target, "NODATA")


PRIVATE_TARGETS = [T.PRIVATE, str(T.PRIVATE_ORIGIN4)]


@pytest.mark.parametrize("target", PRIVATE_TARGETS)
def test_rfc6052_3_1_private_ipv4_under_well_known_prefix_socks(
    netlab: Netlab, wkp: ProxyProcess, target: str
) -> None:
    with socks_socket(netlab, wkp) as sock, pytest.raises(socks5_client.Socks5Failure) as info:
        socks5_client.connect(sock, target, T.HTTP_PORT)
    assert info.value.reply == expected_private_refusal(target).socks_reply
    assert "unreachable" not in wkp.output().split(target)[-1]  # not tayga's ENETUNREACH


@pytest.mark.parametrize("front_end", ["http-connect", "http-forward"])
@pytest.mark.parametrize("target", PRIVATE_TARGETS)
def test_rfc6052_3_1_private_ipv4_under_well_known_prefix_http(
    netlab: Netlab, wkp: ProxyProcess, target: str, front_end: str
) -> None:
    answer = proxy_answer(netlab, wkp, front_end, f"{target}:{T.HTTP_PORT}")
    status = expected_private_refusal(target).http_status
    assert answer.startswith(f"HTTP/1.1 {status} "), answer
    assert "RFC 6052 §3.1" in answer, answer
    assert "unreachable" not in answer  # refused before dialing, not by tayga


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


# --- UDP ASSOCIATE ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [str(T.ORIGIN4), T.V4ONLY], ids=["ipv4-literal", "name"])
def test_udp_associate_echo_through_tayga(netlab: Netlab, wkp: ProxyProcess, target: str) -> None:
    with socks_socket(netlab, wkp) as control:
        relay_host, relay_port = socks5_client.udp_associate(control)
        assert wkp.socks is not None
        if ip_address(relay_host).is_unspecified:  # RFC 1928 §6: "the same address"
            relay_host = wkp.socks[0]
        family = socket.AF_INET6 if ":" in relay_host else socket.AF_INET
        with socket_in(netlab.client, family, socket.SOCK_DGRAM) as udp:
            udp.settimeout(socks5_client.TIMEOUT)
            for size in (1, 512, 1200):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                udp.sendto(
                    socks5_client.udp_datagram(target, T.UDP_ECHO_PORT, payload),
                    (relay_host, relay_port),
                )
                reply, _ = udp.recvfrom(65535)
                host, port, data = socks5_client.parse_udp_datagram(reply)
                assert data == payload
                assert port == T.UDP_ECHO_PORT
                assert host == target  # RFC 1928 §7 header names the source as addressed


# --- the compose demo's client, for real ---------------------------------------------------


def test_compose_client_script_reaches_the_origin(netlab: Netlab, wkp: ProxyProcess) -> None:
    """docker/client/demo.sh, run in the client namespace with the compose environment
    pointed at this proxy64: what `docker compose up` prints, without Docker."""
    env = [
        f"ALL_PROXY=socks5h://{hostport(wkp.socks)}",
        f"HTTPS_PROXY=http://{hostport(wkp.http)}",
        f"HTTP_PROXY_URL=http://{hostport(wkp.http)}",
        f"ORIGIN_NAME={T.V4ONLY}",
        f"ORIGIN_IPV4={T.ORIGIN4}",
    ]
    script = str(REPO / "docker" / "client" / "demo.sh")
    result = netlab.run(netlab.client, ["env", *env, "sh", script], check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines
    for line in lines:
        assert line.startswith("client: ") and " -> " in line, line
        assert_through_tayga(line.split(" -> ", 1)[1])


# --- discover, and the embedded fallback -----------------------------------------------------


def test_discover_prints_the_prefix(netlab: Netlab) -> None:
    prefix = T.NETWORK_SPECIFIC_PREFIXES[48]
    netlab.use_prefix(prefix)
    result = run_proxy64_in(netlab, "discover")  # resolv.conf: the network's DNS64
    assert result.returncode == 0, result.stderr
    assert str(prefix) in result.stdout
    as_json = run_proxy64_in(netlab, "discover", "--dns", UNBOUND, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert str(prefix) in json.dumps(json.loads(as_json.stdout))


def test_discover_without_dns64_says_none_and_serve_falls_back_to_embedded(
    netlab: Netlab,
) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    result = run_proxy64_in(netlab, "discover", "--dns", NSD)  # no DNS64: no synthesis
    assert result.returncode != 0
    assert "no NAT64 prefix found" in result.stdout + result.stderr
    proxy = start_proxy_in(netlab, "--dns", NSD, "--nat64-prefix", "auto", "--egress", "auto")
    try:
        assert proxy.egress == "embedded", proxy.startup_line
        assert "no NAT64 found" in proxy.why
        assert IPv6Network(proxy.prefix) == T.WELL_KNOWN_PREFIX
    finally:
        proxy.stop()
