"""Writing MP4 boxes: plain and full boxes, big-endian tables, edited copies of header boxes."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Mapping

from vms.mediaserver.mp4read import iter_boxes

# What becomes of one box (given whole): its new bytes, or None to leave it out.
Edit = Callable[[bytes], bytes | None]

# Where the duration field of each version of these full boxes sits after the box header.
_DURATION_AT = {b"mvhd": (16, 24), b"mdhd": (16, 24), b"tkhd": (20, 28)}


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


def with_duration(full: bytes, duration: int) -> bytes:
    """An mvhd, mdhd or tkhd (given whole) whose duration field says `duration`."""
    v0_at, v1_at = _DURATION_AT[full[4:8]]
    data = bytearray(full)
    if data[8] == 1:
        struct.pack_into(">Q", data, 8 + v1_at, duration)
    else:
        struct.pack_into(">I", data, 8 + v0_at, min(duration, 0xFFFFFFFF))
    return bytes(data)


def drop(raw: bytes) -> None:
    """The Edit that leaves a box out."""


def edited_children(container: bytes, edits: Mapping[bytes, Edit]) -> list[bytes]:
    """The children of `container` (given whole), the boxes at the paths in `edits` edited.

    A path names a child (b"tkhd") or a box further down (b"mdia/mdhd"); boxes on the way are
    rebuilt around their edited children, and every other box is copied as it is.
    """
    parts = []
    for kind, payload, end in iter_boxes(container, 8, len(container)):
        raw = container[payload - 8 : end]
        below = {path[5:]: edit for path, edit in edits.items() if path.startswith(kind + b"/")}
        new: bytes | None = raw
        if kind in edits:
            new = edits[kind](raw)
        elif below:
            new = box(kind, *edited_children(raw, below))
        if new is not None:
            parts.append(new)
    return parts


def edited(container: bytes, edits: Mapping[bytes, Edit]) -> bytes:
    """`container` (given whole) with the boxes at the paths in `edits` edited."""
    return box(container[4:8], *edited_children(container, edits))


def duration_edits(movie: int, media: int) -> dict[bytes, Edit]:
    """Edits of a trak: tkhd says `movie` (movie timescale), mdhd says `media` (track's)."""
    return {
        b"tkhd": lambda raw: with_duration(raw, movie),
        b"mdia/mdhd": lambda raw: with_duration(raw, media),
    }
