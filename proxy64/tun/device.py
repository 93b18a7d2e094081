"""A TUN device as trio sees it: open (TUNSETIFF), batched non-blocking reads, writes.

Invariants: the fd is non-blocking and close-on-exec; one read is one IP packet
(IFF_TUN | IFF_NO_PI, no packet-information header); reads drain up to a batch per
wakeup so a burst costs one wait, not one per packet. Closing notifies waiters first
(trio.lowlevel.notify_closing) so no task blocks on a closed fd.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct

import trio

from proxy64.defaults import TUN_MTU, TUN_READ_BATCH
from proxy64.errors import Proxy64Error

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # linux/if_tun.h _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16

ROOTLESS_FIX = (
    "/dev/net/tun is not readable and writable by this user (mode 0600 here), so an "
    "unprivileged user namespace cannot open it. Fix: run as root, or `sudo chmod 0666 "
    "/dev/net/tun`, or persistently with a udev rule: "
    'echo \'KERNEL=="tun", MODE="0666"\' | sudo tee /etc/udev/rules.d/99-tun.rules'
)


class TunSetupError(Proxy64Error):
    """The TUN device or its namespace could not be set up; exit status 2."""


def open_tun(name: str) -> tuple[int, str]:
    """Open /dev/net/tun and attach a TUN interface called name; returns (fd, real name)."""
    if len(name.encode()) >= IFNAMSIZ:
        raise TunSetupError(f"TUN device name {name!r} is longer than {IFNAMSIZ - 1} bytes")
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        raise TunSetupError(ROOTLESS_FIX) from None
    except FileNotFoundError:
        raise TunSetupError(
            f"{TUN_PATH} does not exist: load the tun module (`modprobe tun`) or, in a "
            "container, pass the device in (docker run --device /dev/net/tun)"
        ) from None
    try:
        ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
        result = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise TunSetupError(
                f"TUNSETIFF {name}: {exc.strerror}; creating a TUN device needs CAP_NET_ADMIN "
                "(root, or a user namespace that owns the network namespace)"
            ) from None
        raise TunSetupError(f"TUNSETIFF {name}: {exc.strerror}") from None
    real = result[:IFNAMSIZ].rstrip(b"\0").decode()
    return fd, real


class TunDevice:
    """Packets in and out of an open TUN fd (taken over: closing the device closes it)."""

    def __init__(self, fd: int, mtu: int = TUN_MTU) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.read_size = mtu + 4096  # room for a packet larger than the MTU to show up
        self.closed = False
        self.packets_in = 0
        self.packets_out = 0
        self.dropped_out = 0  # writes refused by the kernel (queue full, device gone)

    async def read_batch(self, limit: int = TUN_READ_BATCH) -> list[bytes]:
        """Wait for at least one packet, then drain up to limit without waiting."""
        while True:
            packets: list[bytes] = []
            while len(packets) < limit:
                try:
                    packets.append(os.read(self.fd, self.read_size))
                except BlockingIOError:
                    break
            if packets:
                self.packets_in += len(packets)
                return packets
            await trio.lowlevel.wait_readable(self.fd)

    def write(self, packet: bytes | bytearray) -> bool:
        """Write one packet now; False (counted) when the kernel refuses it, as a link would."""
        try:
            os.write(self.fd, packet)
        except (BlockingIOError, OSError):
            self.dropped_out += 1
            return False
        self.packets_out += 1
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(RuntimeError):  # outside trio.run nobody can wait on it
                trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
