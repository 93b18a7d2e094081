#!/usr/bin/env python3
"""Micro-benchmark of the packet codec (proxy64/packet), the per-packet cost of TUN mode.

    .venv/bin/python bench/bench_packet.py [--quick] [--iterations N] [--repeat R]
                                           [--sizes 64,1500,65535] [--family 4|6|both]

For TCP packets of each total size (bytes on the wire, IP header included) and family,
measures microseconds per operation (median of R rounds) and packets per second:
  parse        parse_ip + parse_transport without checksum check + read ports/seq/flags
  verify       parse_ip + parse_transport checking the TCP checksum (a full pass)
  rewrite      parse a bytearray, set dst address, dst port and TTL/hop limit in place
               (RFC 1624 incremental update of the IP and TCP checksums)
  response     response_to(): a whole answer packet with a payload of the same size,
               fresh checksums (one full pass over the payload)
  incremental  update_checksum() for one 32-bit field (RFC 1624 eqn. 3) alone
  checksum     internet_checksum() over the whole packet
Nothing touches the network. Prints one JSON object on stdout: flat keys
"<op>_<family>_<size>_us" and "..._pps", plus "meta".
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy64.packet import (
    TcpFlags,
    TcpSegment,
    build_tcp,
    internet_checksum,
    parse_ip,
    parse_transport,
    response_to,
    update_checksum,
)

ADDRESSES: dict[int, tuple[IPv4Address | IPv6Address, IPv4Address | IPv6Address]] = {
    4: (IPv4Address("10.0.0.2"), IPv4Address("192.0.2.80")),
    6: (IPv6Address("fd00::2"), IPv6Address("64:ff9b::c000:250")),
}
NEW_DST = {4: ip_address("198.51.100.9"), 6: ip_address("64:ff9b::c633:6409")}
HEADERS = {4: 20 + 20, 6: 40 + 20}
MAX_TOTAL = {4: 65535, 6: 65535 + 40}


def tcp_packet(family: int, size: int) -> bytes:
    src, dst = ADDRESSES[family]
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[: size - HEADERS[family]]
    return build_tcp(
        src, dst, 40000, 443, 1, 2, TcpFlags.ACK | TcpFlags.PSH, 65535, payload=payload
    )


def time_op(op: Callable[[], object], iterations: int, repeat: int) -> dict[str, float]:
    # CPU time of this process: on the shared 2-core machine, wall time mostly measures
    # the other tenants. Wall time is kept alongside for reference.
    cpu, wall = [], []
    for _ in range(repeat):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        for _ in range(iterations):
            op()
        cpu.append((time.process_time() - start_cpu) / iterations * 1e6)
        wall.append((time.perf_counter() - start_wall) / iterations * 1e6)
    return {
        "median": statistics.median(cpu),
        "min": min(cpu),
        "max": max(cpu),
        "wall_median": statistics.median(wall),
    }


def operations(family: int, size: int) -> dict[str, Callable[[], object]]:
    data = tcp_packet(family, size)
    work = bytearray(data)
    new_dst = NEW_DST[family]
    payload = bytes(size - HEADERS[family])
    packet = parse_ip(data)
    old_field, new_field = b"\x0a\x00\x00\x02", b"\xc6\x33\x64\x09"

    def parse() -> object:
        t = parse_transport(parse_ip(data), verify_checksum=False)
        assert isinstance(t, TcpSegment)
        return (t.src_port, t.dst_port, t.seq, t.ack, t.flags, t.window)

    def verify() -> object:
        return parse_transport(parse_ip(data))

    def rewrite() -> object:
        p = parse_ip(work, verify_checksum=False)
        p.dst = new_dst
        p.hop_limit = 63
        t = parse_transport(p, verify_checksum=False)
        assert isinstance(t, TcpSegment)
        t.dst_port = 8443
        return t

    def response() -> object:
        return response_to(packet, payload=payload)

    def incremental() -> object:
        return update_checksum(0x1234, old_field, new_field)

    def checksum() -> object:
        return internet_checksum(data)

    return {
        "parse": parse,
        "verify": verify,
        "rewrite": rewrite,
        "response": response,
        "incremental": incremental,
        "checksum": checksum,
    }


def run(sizes: list[int], families: list[int], iterations: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for family in families:
        for wanted in sizes:
            size = min(wanted, MAX_TOTAL[family])
            # Big packets take longer; keep each round's wall time similar.
            n = max(10, iterations * 1500 // max(size, 1500))
            for name, op in operations(family, size).items():
                stats = time_op(op, n, repeat)
                key = f"{name}_v{family}_{wanted}"
                out[f"{key}_us"] = round(stats["median"], 3)
                out[f"{key}_pps"] = round(1e6 / stats["median"])
                details[key] = {"bytes": size, "iterations": n, **stats}
    out["meta"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": repeat,
        "iterations_at_1500": iterations,
        "details": details,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Packet codec micro-benchmark (parse, rewrite, response building, "
        "checksums) on 64-byte, 1500-byte and 64 KiB TCP packets; prints JSON."
    )
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    parser.add_argument("--iterations", type=int, default=None, help="operations per round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (median reported)")
    parser.add_argument("--sizes", default="64,1500,65535", help="total packet sizes, bytes")
    parser.add_argument("--family", choices=["4", "6", "both"], default="both")
    args = parser.parse_args(argv)
    iterations = args.iterations or (300 if args.quick else 20000)
    repeat = args.repeat or (3 if args.quick else 7)
    if iterations < 1 or repeat < 1:
        parser.error("--iterations and --repeat must be at least 1")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes is a comma-separated list of integers, e.g. 64,1500,65535")
    if any(s < 64 for s in sizes):
        parser.error("--sizes: every size must be at least 64 bytes")
    families = [4, 6] if args.family == "both" else [int(args.family)]
    print(json.dumps(run(sizes, families, iterations, repeat), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
