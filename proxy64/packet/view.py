# Shared helpers of the in-place packet views: buffer normalisation, write guard, and a
# descriptor for a field the packet kind does not have.
#
# Invariants: every view holds a 1-D unsigned-byte memoryview; writes go through it, so a
# view over a bytearray rewrites the caller's buffer and a view over bytes refuses writes
# with PacketFieldError (never a TypeError from memoryview).
from __future__ import annotations

from typing import Any, NoReturn

from proxy64.errors import PacketFieldError

Buffer = bytes | bytearray | memoryview


def as_view(data: Buffer) -> memoryview:
    """A 1-D memoryview of unsigned bytes over data, without copying."""
    if type(data) is not memoryview:
        return memoryview(data)  # bytes and bytearray are always 1-D unsigned bytes
    if data.format != "B" or data.ndim != 1:
        return data.cast("B")
    return data


def require_writable(mv: memoryview, layer: str) -> None:
    if mv.readonly:
        raise PacketFieldError(
            f"{layer}: cannot write a field of a packet parsed from read-only bytes; "
            "parse a bytearray to rewrite it in place"
        )


class Absent:
    """A class attribute for a field this packet kind lacks: reading or writing it raises
    PacketFieldError (an AttributeError) with a sentence naming the right field."""

    __slots__ = ("message", "name")

    def __init__(self, message: str) -> None:
        self.message = message
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: Any = None) -> NoReturn:
        raise PacketFieldError(f"no field {self.name!r}: {self.message}")

    def __set__(self, obj: object, value: object) -> NoReturn:
        raise PacketFieldError(f"no field {self.name!r}: {self.message}")
