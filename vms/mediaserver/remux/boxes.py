"""Writing MP4 boxes: plain and full boxes, big-endian tables, duration fields."""

from __future__ import annotations

import struct
from array import array


def box(kind: bytes, *parts: bytes) -> bytes:
    """An MP4 box of `kind` holding `parts`."""
    size = 8 + sum(len(p) for p in parts)
    return struct.pack(">I4s", size, kind) + b"".join(parts)


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    """An MP4 full box."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def big_endian(values: array[int]) -> bytes:
    """The bytes of `values` in network order, as MP4 tables hold them."""
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def patch_duration(full: bytes, payload: int, v0_at: int, v1_at: int, duration: int) -> bytes:
    """Set the duration field of a tkhd/mdhd given the offsets of it in each version."""
    data = bytearray(full)
    if data[payload] == 1:
        struct.pack_into(">Q", data, payload + v1_at, duration)
    else:
        struct.pack_into(">I", data, payload + v0_at, min(duration, 0xFFFFFFFF))
    return bytes(data)
