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
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int)
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01  # we accept packets whose checksum is only partial (CHECKSUM_PARTIAL)
TUN_F_TSO4 = 0x02  # ... and TCP super-segments (GSO) up to 64 KiB, whatever the MTU
TUN_F_TSO6 = 0x04
VNET_GSO_TCPV4 = 1  # virtio_net_hdr gso_type
VNET_GSO_TCPV6 = 4
MAX_PACKET = 65535 + 40  # an IPv6 GSO packet: 40-byte header + 65535 payload
IFNAMSIZ = 16
# struct virtio_net_hdr (linux/virtio_net.h), little-endian on the hosts tun supports here
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
_PLAIN_HDR = bytes(VNET_HDR_LEN)

ROOTLESS_FIX = (
    "/dev/net/tun is not readable and writable by this user (mode 0600 here), so an "
    "unprivileged user namespace cannot open it. Fix: run as root, or `sudo chmod 0666 "
    "/dev/net/tun`, or persistently with a udev rule: "
    'echo \'KERNEL=="tun", MODE="0666"\' | sudo tee /etc/udev/rules.d/99-tun.rules'
)


class TunSetupError(Proxy64Error):
    """The TUN device or its namespace could not be set up; exit status 2."""


def open_tun(name: str, *, vnet: bool = True) -> tuple[int, str]:
    """Open /dev/net/tun and attach a TUN interface called name; returns (fd, real name).

    vnet: each packet carries a virtio_net_hdr, so checksums can be left to the kernel
    (TUN_F_CSUM): the app's packets arrive with partial checksums we need not verify,
    and ours go out with partial checksums the app's kernel trusts (local delivery)."""
    if len(name.encode()) >= IFNAMSIZ:
        raise TunSetupError(f"TUN device name {name!r} is longer than {IFNAMSIZ - 1} bytes")
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        # `tun run` checks this first and explains its user namespace (ROOTLESS_FIX); here a
        # device is opened directly (`tun serve`), which needs root or a device made for us.
        raise TunSetupError(
            f"{TUN_PATH} is not readable and writable by this user, so proxy64 cannot open "
            f"TUN device {name!r}. Fix: run as root, or create the device for your user "
            f"(`sudo ip tuntap add dev {name} mode tun user $USER`) and make {TUN_PATH} mode "
            "0666 (`sudo chmod 0666 /dev/net/tun`, or a udev rule)"
        ) from None
    except FileNotFoundError:
        raise TunSetupError(
            f"{TUN_PATH} does not exist: load the tun module (`modprobe tun`) or, in a "
            "container, pass the device in (docker run --device /dev/net/tun)"
        ) from None
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
        ifr = struct.pack("16sH", name.encode(), flags)
        result = fcntl.ioctl(fd, TUNSETIFF, ifr)
        if vnet:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
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


def has_vnet_header(fd: int) -> bool:
    """Whether an open TUN fd was attached with IFF_VNET_HDR (TUNGETIFF)."""
    result = fcntl.ioctl(fd, TUNGETIFF, bytes(IFNAMSIZ + 8))
    (flags,) = struct.unpack_from("H", result, IFNAMSIZ)
    return bool(flags & IFF_VNET_HDR)


class TunDevice:
    """Packets in and out of an open TUN fd (taken over: closing the device closes it).

    read_batch() yields (packet, checksum_trusted): trusted when the kernel says the
    checksum is partial or already verified (virtio_net_hdr flags), so decode may skip it.
    """

    def __init__(self, fd: int, mtu: int = TUN_MTU, *, vnet: bool = False) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.vnet = vnet
        # With vnet (TSO) the app's kernel may hand over 64 KiB even with a small MTU.
        self.read_size = (max(mtu, MAX_PACKET) + VNET_HDR_LEN) if vnet else mtu + 4096
        self.closed = False
        self.packets_in = 0
        self.packets_out = 0
        self.dropped_out = 0  # writes refused by the kernel (queue full, device gone)

    async def read_batch(
        self, limit: int = TUN_READ_BATCH
    ) -> list[tuple[bytes | memoryview, bool]]:
        """Wait for at least one packet, then drain up to limit without waiting.

        With vnet a packet is a view past the virtio header (slicing would copy it)."""
        while True:
            packets: list[tuple[bytes | memoryview, bool]] = []
            while len(packets) < limit:
                try:
                    data = os.read(self.fd, self.read_size)
                except BlockingIOError:
                    break
                if self.vnet:
                    if len(data) < VNET_HDR_LEN:
                        continue  # cannot happen with a sane kernel; never mis-parse it
                    trusted = bool(data[0] & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID))
                    packets.append((memoryview(data)[VNET_HDR_LEN:], trusted))
                else:
                    packets.append((data, False))
            if packets:
                self.packets_in += len(packets)
                return packets
            await trio.lowlevel.wait_readable(self.fd)

    def write(
        self,
        packet: bytes | bytearray,
        csum_start: int = 0,
        csum_offset: int = 0,
        gso_size: int = 0,
        payload: bytes | memoryview = b"",
    ) -> bool:
        """Write one packet now; False (counted) when the kernel refuses it, as a link would.

        csum_start/csum_offset (vnet only): the packet's transport checksum is partial
        (pseudo-header sum only) at csum_start + csum_offset; the kernel treats it as
        CHECKSUM_PARTIAL, which local delivery accepts without computing it. gso_size (TCP,
        vnet only): the packet is a super-segment of that MSS (GSO, like a GRO'd packet).
        payload (vnet with csum_start only): the rest of the packet after packet (then only
        its headers), written in the same writev so it is never joined (copied) here."""
        try:
            if not self.vnet:
                os.write(self.fd, packet)
            elif csum_start:
                gso_type = 0
                header_length = 0
                if gso_size:
                    gso_type = VNET_GSO_TCPV6 if packet[0] >> 4 == 6 else VNET_GSO_TCPV4
                    header_length = csum_start + ((packet[csum_start + 12] >> 4) << 2)
                header = VNET_HDR.pack(
                    VNET_F_NEEDS_CSUM, gso_type, header_length, gso_size, csum_start, csum_offset
                )
                os.writev(self.fd, (header, packet, payload) if payload else (header, packet))
            else:
                os.writev(self.fd, (_PLAIN_HDR, packet))
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
