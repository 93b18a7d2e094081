#!/usr/bin/env python3
"""Micro-benchmark of proxy64's DNS64 hot path: lookups that the cache answers.

    .venv/bin/python bench/bench_dns64.py [--quick] [--iterations N] [--repeat R]

Measures, in microseconds per operation (median of R rounds, plus min and max):
  cache_hit_us         Dns64Cache.get of a cached name (the dialer's fast path)
  resolve_cached_us    DNS64Resolver.resolve of a cached name (name parsing + cache + result)
  respond_cached_us    DNS64Responder.respond to an AAAA query for a cached name
                       (wire parse, cache, reply render; no socket)
Nothing touches the network: the cache is filled directly and the upstream server
address is never contacted. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy64.config import HostPort, ResolverSettings
from proxy64.net.dns_cache import Dns64Cache, cache_key
from proxy64.net.dns_server import DNS64Responder
from proxy64.net.resolver import DNS64Resolver
from proxy64.proto.dns64 import Dns64Answer, Outcome
from proxy64.proto.rfc6052 import Nat64Prefix

PREFIX = Nat64Prefix.parse("64:ff9b::/96")
NAMES = 1000


def _fill(cache: Dns64Cache, now: float) -> list[str]:
    names = []
    for i in range(NAMES):
        name = f"host{i}.bench.example"
        qname = dns.name.from_text(name)
        cache.put(
            Dns64Answer(
                qname=qname,
                outcome=Outcome.ANSWER,
                chain=(),
                owner=qname,
                addresses=(PREFIX.embed(IPv4Address(0x01020000 + i)),),
                synthesized=True,
                ttl=3600,
            ),
            now,
        )
        names.append(name)
    return names


def _rounds(measure: Callable[[], float], repeat: int) -> dict[str, float]:
    values = [measure() for _ in range(repeat)]
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


async def _async_rounds(measure: Callable[[], Awaitable[float]], repeat: int) -> dict[str, float]:
    values = [await measure() for _ in range(repeat)]
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


async def _bench(iterations: int, repeat: int) -> dict[str, Any]:
    never = HostPort(ip_address("127.0.0.1"), 9)  # discard port; the cache answers first
    settings = ResolverSettings(servers=(never,), prefix=PREFIX)
    resolver = DNS64Resolver(settings, PREFIX)
    names = _fill(resolver.cache, trio.current_time())
    qnames = [dns.name.from_text(n) for n in names]
    keys = [cache_key(q) for q in qnames]
    responder = DNS64Responder(resolver)
    queries = [dns.message.make_query(n, "AAAA").to_wire() for n in qnames[:100]]

    def cache_hit() -> float:
        cache, now = resolver.cache, trio.current_time()
        start = time.perf_counter()
        for i in range(iterations):
            cache.get(keys[i % NAMES], now)
        return (time.perf_counter() - start) / iterations * 1e6

    async def resolve_cached() -> float:
        start = time.perf_counter()
        for i in range(iterations):
            await resolver.resolve(names[i % NAMES])
        return (time.perf_counter() - start) / iterations * 1e6

    async def respond_cached() -> float:
        start = time.perf_counter()
        for i in range(iterations):
            await responder.respond(queries[i % len(queries)], transport="udp")
        return (time.perf_counter() - start) / iterations * 1e6

    result = {
        "benchmark": "dns64",
        "iterations": iterations,
        "repeat": repeat,
        "cache_hit_us": _rounds(cache_hit, repeat),
        "resolve_cached_us": await _async_rounds(resolve_cached, repeat),
        "respond_cached_us": await _async_rounds(respond_cached, repeat),
        "cache_hits": resolver.cache.hits,
        "cache_misses": resolver.cache.misses,
        "python": sys.version.split()[0],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="µs per cache-hit DNS64 lookup, per resolve() and per server reply of a "
        "cached name; prints JSON. No network traffic."
    )
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    parser.add_argument("--iterations", type=int, default=None, help="operations per round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (median reported)")
    args = parser.parse_args(argv)
    iterations = args.iterations or (2_000 if args.quick else 50_000)
    repeat = args.repeat or (3 if args.quick else 7)
    if iterations < 1 or repeat < 1:
        parser.error("--iterations and --repeat must be at least 1")
    print(json.dumps(trio.run(_bench, iterations, repeat), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
