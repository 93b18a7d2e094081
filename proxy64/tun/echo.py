"""Echo requests from the app carried through the egress: a real ping, or no answer.

An unprivileged ICMP "ping" socket (SOCK_DGRAM, allowed by net.ipv4.ping_group_range)
is tried first, then a raw socket (root). The request goes to the address the dialer's
udp_target() chooses (the IPv6 address, or the embedded IPv4 with the embedded egress),
so the app's reply means the destination really answered. When the host allows neither
socket, the echo is answered locally for destinations the dialer can map, which says
only "proxy64 is up" (documented in docs/tun.md; `pinger.kind` tells which).
"""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address, IPv6Address

import trio

from proxy64.defaults import TUN_ECHO_TIMEOUT

IPAddress = IPv4Address | IPv6Address

_ECHO_REQUEST = {4: 8, 6: 128}  # RFC 792, RFC 4443 §4.1
_ECHO_REPLY = {4: 0, 6: 129}


def _open(version: int) -> tuple[socket.socket, bool] | None:
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if version == 6 else socket.IPPROTO_ICMP
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
        except (PermissionError, OSError):
            continue
        return sock, kind == socket.SOCK_RAW
    return None


def probe_kind() -> str:
    """'ping-socket', 'raw-socket' or 'local' (what this host allows for IPv6)."""
    opened = _open(6)
    if opened is None:
        return "local"
    opened[0].close()
    return "raw-socket" if opened[1] else "ping-socket"


async def echo(address: IPAddress, ident: int, sequence: int, data: bytes) -> bool | None:
    """Ping address once; True on a reply, False on timeout, None when no socket is allowed."""
    version = address.version
    opened = _open(version)
    if opened is None:
        return None
    sock, raw = opened
    ident = (ident ^ os.getpid()) & 0xFFFF if raw else ident
    header = struct.pack("!BBHHH", _ECHO_REQUEST[version], 0, 0, ident, sequence)
    packet = bytearray(header + data)
    if version == 4 and raw:  # the kernel fills the ICMPv6 checksum, not the ICMP one
        packet[2:4] = _checksum(packet).to_bytes(2, "big")
    with sock, trio.move_on_after(TUN_ECHO_TIMEOUT):
        try:
            sock.sendto(bytes(packet), (str(address), 0))
        except OSError:
            return False
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                reply, _ = sock.recvfrom(65535)
            except BlockingIOError:
                continue
            except OSError:
                return False
            if version == 4 and raw:
                reply = reply[(reply[0] & 0x0F) * 4 :]
            if len(reply) < 8 or reply[0] != _ECHO_REPLY[version]:
                continue
            got_ident, got_seq = struct.unpack("!HH", reply[4:8])
            if got_seq == sequence and (not raw or got_ident == ident):
                return True
    return False


def _checksum(data: bytes | bytearray) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
