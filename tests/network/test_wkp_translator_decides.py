"""Non-global IPv4 under the well-known prefix, as real networks have it: IPv4 services in
100.64.0.0/10 (RFC 6598) and 10.0.0.0/8 behind Debian's tayga 0.9.2 on 64:ff9b::/96, with
Unbound as the network's DNS64. tayga translates the first and refuses the second (RFC 6052
§3.1 as it applies it); proxy64 leaves that decision to the translator: its DNS64
synthesizes both, its dialer dials both, and when tayga refuses, the client hears it at
once with the likely cause and the way out. With --strict-wkp proxy64 refuses both itself,
before dialing, as tayga >= 0.9.4 would. Behind a network-specific prefix tayga carries
both, and so does proxy64, strict or not. The readiness report marks what a strict NAT64
would refuse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from proxy64.defaults import CONNECT_TIMEOUT
from proxy64.errors import SocksReply
from tests.helpers import socks5_client
from tests.helpers.proxy_process import ProxyProcess
from tests.helpers.requirements import require_tool, tool_path
from tests.network import topology as T
from tests.network.clients import (
    FRONT_ENDS,
    NSD,
    UNBOUND,
    assert_through_tayga,
    fetch,
    proxy_answer,
    socks_socket,
)
from tests.network.netlab import Netlab
from tests.network.proxy import proxy_in, run_proxy64_in

# seconds: a translator's refusal is an ICMPv6 error, answered at once; a silent drop would
# cost the whole connect timeout, so a third of it tells the two apart with room for a
# loaded machine
QUICK = CONNECT_TIMEOUT / 3
HINT = (
    f"the NAT64 likely refuses {T.PRIVATE_ORIGIN4} under {T.WELL_KNOWN_PREFIX}: strict "
    "translators (RFC 6052 §3.1, tayga >= 0.9.4) do not carry non-global IPv4 under the "
    "well-known prefix; use the network's specific prefix with --nat64-prefix"
)
SHARED_TARGETS = {"name": T.SHARED, "ipv4-literal": str(T.SHARED_ORIGIN4)}
PRIVATE_TARGETS = {"name": T.PRIVATE, "ipv4-literal": str(T.PRIVATE_ORIGIN4)}


@pytest.fixture(scope="module")
def network_proxy(netlab: Netlab) -> Iterator[ProxyProcess]:
    """proxy64 as a new user runs it there: DNS is the network's DNS64 (Unbound), the
    prefix found with RFC 7050 (64:ff9b::/96), the network's NAT64 as egress."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    with proxy_in(netlab, "--dns", UNBOUND, "--nat64-prefix", "auto") as proxy:
        assert proxy.prefix == str(T.WELL_KNOWN_PREFIX), proxy.startup_line
        assert proxy.egress == "nat64", proxy.startup_line
        yield proxy


@pytest.fixture
def real(netlab: Netlab, network_proxy: ProxyProcess) -> ProxyProcess:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)  # another test may have switched tayga
    return network_proxy


@pytest.fixture(scope="module")
def strict_proxy(netlab: Netlab) -> Iterator[ProxyProcess]:
    """proxy64 doing its own DNS64 (NSD) under the WKP, as a strict translator would."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    args = ("--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX), "--egress", "nat64")
    with proxy_in(netlab, *args, "--strict-wkp") as proxy:
        yield proxy


@pytest.fixture
def strict(netlab: Netlab, strict_proxy: ProxyProcess) -> ProxyProcess:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    return strict_proxy


# --- 100.64.0.0/10: tayga 0.9.2 carries it, so proxy64 does ------------------------------


@pytest.mark.parametrize("target", SHARED_TARGETS.values(), ids=SHARED_TARGETS.keys())
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_shared_space_origin_reached_through_the_wkp(
    netlab: Netlab, real: ProxyProcess, front_end: str, target: str
) -> None:
    body = fetch(netlab, real, front_end, f"http://{target}/{front_end}")
    assert_through_tayga(body)


def test_shared_space_origin_reached_by_an_app_under_proxychains4(
    netlab: Netlab, real: ProxyProcess
) -> None:
    require_tool("proxychains4")
    assert real.socks is not None
    conf = netlab.workdir / "proxychains-wkp.conf"
    conf.write_text(
        "strict_chain\nproxy_dns\nremote_dns_subnet 224\ntcp_read_time_out 15000\n"
        f"tcp_connect_time_out 8000\n[ProxyList]\nsocks5 {real.socks[0]} {real.socks[1]}\n"
    )
    argv = [tool_path("proxychains4"), "-q", "-f", str(conf), tool_path("curl")]
    for url in (f"http://{T.SHARED}/chains", f"http://{T.SHARED_ORIGIN4}/chains"):
        result = netlab.run(
            netlab.client, [*argv, "-sS", "--max-time", "10", url], check=False, timeout=20
        )
        assert result.returncode == 0, result.stderr
        assert_through_tayga(result.stdout)


# --- 10.0.0.0/8: tayga refuses it; the client hears so at once, with the reason ----------


@pytest.mark.parametrize("target", PRIVATE_TARGETS.values(), ids=PRIVATE_TARGETS.keys())
def test_rfc6052_3_1_tayga_refusal_reaches_the_socks_client_quickly(
    netlab: Netlab, real: ProxyProcess, target: str
) -> None:
    started = time.monotonic()
    with socks_socket(netlab, real) as sock, pytest.raises(socks5_client.Socks5Failure) as info:
        socks5_client.connect(sock, target, T.HTTP_PORT)
    elapsed = time.monotonic() - started
    # the reply is what the errno says (ICMPv6 unreachable), as for any unreachable host
    assert info.value.reply in (SocksReply.NETWORK_UNREACHABLE, SocksReply.HOST_UNREACHABLE)
    assert elapsed < QUICK, f"{elapsed:.2f}s"
    deadline = time.monotonic() + 5
    while HINT not in real.output():
        assert time.monotonic() < deadline, real.output()[-3000:]
        time.sleep(0.05)
    line = next(ln for ln in real.output().splitlines() if HINT in ln and target in ln)
    assert "socks5" in line  # the connection's one log line names the cause


@pytest.mark.parametrize("target", PRIVATE_TARGETS.values(), ids=PRIVATE_TARGETS.keys())
@pytest.mark.parametrize("front_end", ["http-connect", "http-forward"])
def test_rfc6052_3_1_tayga_refusal_reaches_the_http_client_quickly(
    netlab: Netlab, real: ProxyProcess, front_end: str, target: str
) -> None:
    started = time.monotonic()
    answer = proxy_answer(netlab, real, front_end, f"{target}:{T.HTTP_PORT}")
    elapsed = time.monotonic() - started
    assert answer.startswith("HTTP/1.1 502 "), answer
    assert HINT in answer, answer
    assert elapsed < QUICK, f"{elapsed:.2f}s"


def test_rfc6052_3_1_curl_gets_the_refusal_at_once(netlab: Netlab, real: ProxyProcess) -> None:
    for args in (["--socks5-hostname", f"127.0.0.1:{real.socks[1]}"],  # type: ignore[index]
                 ["-x", f"http://127.0.0.1:{real.http[1]}"]):  # type: ignore[index]  # fmt: skip
        started = time.monotonic()
        result = netlab.curl(*args, f"http://{T.PRIVATE}/")
        elapsed = time.monotonic() - started
        assert result.returncode in (22, 97, 0) and "origin=" not in result.stdout, result
        assert elapsed < QUICK + 0.5, f"{args[0]}: {elapsed:.2f}s"  # curl's own start-up


# --- --strict-wkp: proxy64 refuses both itself, before dialing ----------------------------


@pytest.mark.parametrize(
    "target", [*SHARED_TARGETS.values(), *PRIVATE_TARGETS.values()], ids=lambda t: t
)
def test_rfc6052_3_1_strict_wkp_refuses_before_dialing(
    netlab: Netlab, strict: ProxyProcess, target: str
) -> None:
    started = time.monotonic()
    with socks_socket(netlab, strict) as sock, pytest.raises(socks5_client.Socks5Failure) as info:
        socks5_client.connect(sock, target, T.HTTP_PORT)
    assert info.value.reply == SocksReply.NOT_ALLOWED  # proxy64's ruleset, not tayga
    for front_end in ("http-connect", "http-forward"):
        answer = proxy_answer(netlab, strict, front_end, f"{target}:{T.HTTP_PORT}")
        assert answer.startswith("HTTP/1.1 403 "), answer
        assert "--strict-wkp: a strict NAT64 refuses" in answer and "RFC 6052 §3.1" in answer
        assert "unreachable" not in answer  # refused here, never dialed
    assert time.monotonic() - started < 3 * QUICK
    # a global destination is still reached
    assert_through_tayga(fetch(netlab, strict, "socks5h", f"http://{T.V4ONLY}/strict"))


# --- a network-specific prefix carries both, strict or not ---------------------------------


@pytest.mark.parametrize("strict_flag", [(), ("--strict-wkp",)], ids=["default", "strict"])
def test_network_specific_prefix_carries_shared_and_private(
    netlab: Netlab, strict_flag: tuple[str, ...]
) -> None:
    prefix = T.NETWORK_SPECIFIC_PREFIXES[64]
    netlab.use_prefix(prefix)
    args = ("--dns", UNBOUND, "--nat64-prefix", "auto", *strict_flag)
    with proxy_in(netlab, *args) as proxy:
        assert proxy.prefix == str(prefix), proxy.startup_line
        for target in (T.SHARED, T.PRIVATE, str(T.PRIVATE_ORIGIN4)):
            for front_end in FRONT_ENDS:
                assert_through_tayga(fetch(netlab, proxy, front_end, f"http://{target}/nsp"))


# --- the readiness report marks what a strict NAT64 would refuse -----------------------------


def test_readiness_report_marks_what_a_strict_nat64_would_refuse(netlab: Netlab) -> None:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    report = netlab.workdir / "wkp-report.json"
    script = (
        f"curl -sS -m 10 http://{T.SHARED}/r; curl -sS -m 10 http://{T.V4ONLY}/r; "
        f"curl -sS -m 10 http://{T.PRIVATE}/r; true"
    )
    done = run_proxy64_in(
        netlab, "run", "--dns", UNBOUND, "--report", str(report), "--", "sh", "-c", script
    )
    assert done.returncode == 0, done.stderr
    rows = {d["destination"]: d for d in json.loads(report.read_text())["destinations"]}
    assert rows[f"{T.SHARED}:80"]["strict_nat64_refuses"] is True
    assert rows[f"{T.SHARED}:80"]["failures"] == 0  # this network's tayga carried it
    assert rows[f"{T.PRIVATE}:80"]["strict_nat64_refuses"] is True
    assert HINT in rows[f"{T.PRIVATE}:80"]["last_failure"]
    assert rows[f"{T.V4ONLY}:80"]["strict_nat64_refuses"] is False
    # the readiness verdict: reached here, refused by a strict NAT64
    assert f"  {T.SHARED}:80: strict-nat64-refused: {T.SHARED_ORIGIN4} is not global" in (
        done.stderr
    )
    assert f"  {T.PRIVATE}:80: strict-nat64-refused: " in done.stderr
