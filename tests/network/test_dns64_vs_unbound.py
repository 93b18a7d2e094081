"""proxy64's DNS64 against Unbound's DNS64 in the same network (RFC 6147).

Both run from the client namespace: `proxy64 resolve NAME --json` synthesizes from the
authoritative NSD itself, `dig` asks Unbound (`module-config: "dns64 iterator"`), which
asks the same NSD. They must give the same AAAA set and outcome for every name, except
where the RFCs allow them to differ, each stated below with its section:

- TTL of a synthesized AAAA (RFC 6147 §5.1.7): proxy64 uses min(A TTL, the SOA minimum of
  the negative AAAA answer), as the RFC recommends; Unbound copies the A TTL.
- ::ffff:0:0/96 AAAA records (RFC 6147 §5.1.4, default exclusion set): proxy64 treats
  them as absent and synthesizes from the A record; Unbound returns them.
- Non-global IPv4 under the well-known prefix (RFC 6052 §3.1 "MUST NOT"): proxy64 does
  not synthesize (NODATA naming §3.1); Unbound does, and tayga then refuses the packets.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest

from proxy64.proto.rfc6052 import Nat64Prefix
from tests.network import topology as T
from tests.network.netlab import Netlab
from tests.network.proxy import COMMAND_TIMEOUT, proxy64_argv, run_proxy64_in

SHORT_TTL = "shortttl.nat64.test"  # A with TTL 60, below the zone's SOA minimum (300)
SOA_MINIMUM = 300  # docker/dns/nat64.test.zone
A_TTL = 3600
IPV4ONLY_ARPA = "ipv4only.arpa"
NAMES = [
    T.V4ONLY,
    T.CNAME_CHAIN,
    T.DUAL,
    T.V6ONLY,
    T.PRIVATE,
    T.SHARED,
    T.MAPPED,
    T.MULTI,
    T.TXTONLY,
    T.MISSING,
    SHORT_TTL,
    IPV4ONLY_ARPA,
]
PREFIXES = [T.WELL_KNOWN_PREFIX, T.NETWORK_SPECIFIC_PREFIXES[40]]


@dataclass(frozen=True)
class Outcome:
    rcode: str  # NOERROR, NXDOMAIN (NODATA is NOERROR with no AAAA)
    addresses: frozenset[IPv6Address]
    ttls: tuple[int, ...]


def parse_resolve(name: str, returncode: int, stdout: str, stderr: str) -> tuple[Outcome, str]:
    """`proxy64 resolve --json` output -> (Outcome, error message or "")."""
    assert stdout.strip(), f"resolve {name}: exit {returncode} {stderr}"
    answer = json.loads(stdout)
    if "error" in answer:
        assert returncode != 0
        assert answer["error"] in ("NXDOMAIN", "NODATA"), answer
        rcode = "NXDOMAIN" if answer["error"] == "NXDOMAIN" else "NOERROR"
        return Outcome(rcode, frozenset(), ()), answer["message"]
    assert returncode == 0, stderr
    records = answer["records"]
    addresses = frozenset(IPv6Address(r["address"]) for r in records)
    return Outcome("NOERROR", addresses, tuple(r["ttl"] for r in records)), ""


def resolve_args(name: str, prefix: IPv6Network) -> list[str]:
    dns = f"[{T.NSD6}]:53"
    return ["resolve", name, "--dns", dns, "--nat64-prefix", str(prefix), "--json"]


def ask_proxy64(lab: Netlab, name: str, prefix: IPv6Network) -> tuple[Outcome, str]:
    result = run_proxy64_in(lab, *resolve_args(name, prefix))
    return parse_resolve(name, result.returncode, result.stdout, result.stderr)


BATCH_STARTUP_SHARE = 4.0  # seconds of budget per `proxy64 resolve` started together


def ask_proxy64_all(
    lab: Netlab, names: list[str], prefix: IPv6Network
) -> dict[str, tuple[Outcome, str]]:
    """One `proxy64 resolve` per name, started together: start-up time dominates here."""
    processes = {
        name: subprocess.Popen(
            proxy64_argv(lab.client, *resolve_args(name, prefix)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    answers = {}
    # The processes share two cores (and, in a busy run, other tests): each gets the
    # single-command timeout plus its share of the start-up of the whole batch.
    deadline = time.monotonic() + COMMAND_TIMEOUT + BATCH_STARTUP_SHARE * len(processes)
    try:
        for name, process in processes.items():
            remaining = max(1.0, deadline - time.monotonic())
            stdout, stderr = process.communicate(timeout=remaining)
            answers[name] = parse_resolve(name, process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return answers


def ask_unbound(lab: Netlab, name: str) -> Outcome:
    out = lab.run(
        lab.client,
        ["dig", "+noall", "+comments", "+answer", "+time=3", "AAAA", name, f"@{T.UNBOUND6}"],
    ).stdout
    status = out.split("status: ", 1)[1].split(",", 1)[0]
    addresses, ttls = [], []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[3] == "AAAA":
            addresses.append(IPv6Address(fields[4]))
            ttls.append(int(fields[1]))
    return Outcome(status, frozenset(addresses), tuple(ttls))


def embed(prefix: IPv6Network, *ipv4: IPv4Address | str) -> frozenset[IPv6Address]:
    nat64 = Nat64Prefix.from_network(prefix)
    return frozenset(nat64.embed(IPv4Address(a)) for a in ipv4)


@pytest.fixture(params=PREFIXES, ids=lambda p: f"len{p.prefixlen}", scope="module")
def prefix(request: pytest.FixtureRequest, netlab: Netlab) -> IPv6Network:
    chosen: IPv6Network = request.param
    return chosen


@pytest.fixture(scope="module")
def proxy64_answers(netlab: Netlab, prefix: IPv6Network) -> dict[str, tuple[Outcome, str]]:
    return ask_proxy64_all(netlab, NAMES, prefix)


@pytest.mark.parametrize("name", NAMES)
def test_rfc6147_same_answers_as_unbound(
    netlab: Netlab,
    prefix: IPv6Network,
    proxy64_answers: dict[str, tuple[Outcome, str]],
    name: str,
) -> None:
    netlab.use_prefix(prefix)
    ours, _ = proxy64_answers[name]  # T.PRIVATE too: neither filters (RFC 6052 §3.1)
    theirs = ask_unbound(netlab, name)

    if name == T.MAPPED:  # RFC 6147 §5.1.4: ::ffff:0:0/96 is in the default exclusion set
        assert theirs.addresses == {IPv6Address(f"::ffff:{T.ORIGIN4}")}
        assert ours.addresses == embed(prefix, T.ORIGIN4)
        return
    assert ours.rcode == theirs.rcode
    assert ours.addresses == theirs.addresses


def test_rfc6147_expected_synthesis(
    prefix: IPv6Network, proxy64_answers: dict[str, tuple[Outcome, str]]
) -> None:
    """Not only equal to Unbound: equal to the RFC 6052 addresses of the zone's A records."""
    for name, ipv4 in (
        (T.V4ONLY, [T.ORIGIN4]),
        (T.CNAME_CHAIN, [T.ORIGIN4]),
        (T.MULTI, [T.ORIGIN4, IPv4Address("100.200.0.11")]),
        (T.PRIVATE, [T.PRIVATE_ORIGIN4]),  # every prefix, the well-known one too
        (T.SHARED, [T.SHARED_ORIGIN4]),
    ):
        ours, _ = proxy64_answers[name]
        assert ours.addresses == embed(prefix, *ipv4), name
    native, _ = proxy64_answers[T.DUAL]
    assert native.addresses == {T.ORIGIN6}  # RFC 6147 §5.1.1: a real AAAA wins


def test_rfc6147_5_1_7_synthesized_ttl(netlab: Netlab) -> None:
    """proxy64: min(A TTL, SOA minimum); Unbound: the A TTL (both allowed by §5.1.7)."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    ours, _ = ask_proxy64(netlab, T.V4ONLY, T.WELL_KNOWN_PREFIX)
    theirs = ask_unbound(netlab, T.V4ONLY)
    assert ours.ttls == (SOA_MINIMUM,)
    assert all(A_TTL - 60 <= ttl <= A_TTL for ttl in theirs.ttls)  # cached: counts down
    short_ours, _ = ask_proxy64(netlab, SHORT_TTL, T.WELL_KNOWN_PREFIX)
    short_theirs = ask_unbound(netlab, SHORT_TTL)
    assert short_ours.ttls == (60,)  # the A TTL is the smaller one
    assert all(ttl <= 60 for ttl in short_theirs.ttls)
