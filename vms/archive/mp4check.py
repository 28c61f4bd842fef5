"""Is a downloaded file a whole MP4? Checked before an archive is called ready."""

from __future__ import annotations

import struct
from pathlib import Path

import av

_MAX_BOXES = 1_000_000


class IncompleteMP4(Exception):
    """The file is truncated, padded or not an MP4 at all."""


def top_level_boxes(path: Path) -> list[tuple[str, int]]:
    """(type, size) of every top-level box; IncompleteMP4 if they do not tile the file exactly."""
    size = path.stat().st_size
    boxes: list[tuple[str, int]] = []
    with open(path, "rb") as handle:
        offset = 0
        while offset < size:
            if len(boxes) >= _MAX_BOXES:
                raise IncompleteMP4("too many boxes")
            header = handle.read(8)
            if len(header) < 8:
                raise IncompleteMP4("truncated box header")
            box_size, kind_raw = struct.unpack(">I4s", header)
            if box_size == 1:
                large = handle.read(8)
                if len(large) < 8:
                    raise IncompleteMP4("truncated box header")
                (box_size,) = struct.unpack(">Q", large)
            elif box_size == 0:
                box_size = size - offset
            kind = kind_raw.decode("latin-1")
            if box_size < 8 or not kind.isprintable():
                raise IncompleteMP4("not an MP4 box")
            if offset + box_size > size:
                raise IncompleteMP4(f"{kind} box runs past the end of the file")
            boxes.append((kind, box_size))
            offset += box_size
            handle.seek(offset)
    return boxes


def check_mp4(path: Path) -> float:
    """The playable duration in seconds of a whole MP4 with video; IncompleteMP4 otherwise."""
    kinds = [kind for kind, _ in top_level_boxes(path)]
    if not kinds or kinds[0] != "ftyp":
        raise IncompleteMP4("no ftyp box at the start")
    if "moov" not in kinds or "mdat" not in kinds:
        raise IncompleteMP4("no moov or mdat box")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise IncompleteMP4("no video stream")
            duration = container.duration
    except av.error.FFmpegError as exc:
        raise IncompleteMP4(f"unreadable: {type(exc).__name__}") from None
    if not duration or duration <= 0:
        raise IncompleteMP4("zero duration")
    return float(duration) / 1_000_000
