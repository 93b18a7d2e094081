"""Keep freed heap memory in the TUN stack's process instead of returning it at once.

Why: every packet read from the TUN is a new ~64 KiB bytes object (os.read allocates the
largest packet, then shrinks it), and every relay chunk another; glibc's malloc gives the
top of its heap back to the kernel (brk) whenever more than M_TRIM_THRESHOLD (128 KiB by
default) is free there, so at bulk speed the heap shrank and grew again hundreds of times
per GiB, each growth paid in page faults and page zeroing (sys time). Raising the trim
threshold keeps up to that much freed memory for reuse; M_TOP_PAD grows the heap in
larger steps; M_MMAP_THRESHOLD keeps reads of up to TUN_SOCKET_READ_MAX on the heap (a
mapping per read would be faulted in page by page and unmapped again). Best effort:
without glibc (musl, other systems) nothing changes.

Invariant: only the process running the TUN stack calls this (it is process-wide).
"""

from __future__ import annotations

import ctypes

from proxy64.defaults import TUN_HEAP_MMAP_THRESHOLD, TUN_HEAP_TOP_PAD, TUN_HEAP_TRIM_THRESHOLD

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Raise glibc's trim threshold and top pad; False when mallopt is not available."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols (no library search)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trim = mallopt(M_TRIM_THRESHOLD, TUN_HEAP_TRIM_THRESHOLD)
    pad = mallopt(M_TOP_PAD, TUN_HEAP_TOP_PAD)
    mapped = mallopt(M_MMAP_THRESHOLD, TUN_HEAP_MMAP_THRESHOLD)
    return bool(trim and pad and mapped)  # mallopt returns 1 on success
