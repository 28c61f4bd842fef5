"""Joining recorded segments into one archive by stream copy: samples are copied, never decoded.

Like MediaMTX's playback muxers this works on MP4 boxes: the sample tables of each moof are
read, the samples in range are picked, and their bytes are copied from the segment files.

- `plan`: which samples go in, at what times (placement from `start`, the end, joining).
- `muxer`: the Archive interface each format implements, Cancelled, reading sample data.
- `fmp4` and `mp4`: one Archive per format; `boxes`: writing the boxes they are made of.

All of this is blocking: callers run `open_archive` and `Archive.read` in an executor.
"""

from __future__ import annotations

import threading
from datetime import datetime

from vms.mediaserver.recordings import (
    CONCATENATION_TOLERANCE,
    InfoCache,
    Segment,
    segment_info,
)
from vms.mediaserver.remux.fmp4 import FMP4Archive
from vms.mediaserver.remux.mp4 import MP4Archive
from vms.mediaserver.remux.muxer import Archive, Cancelled
from vms.mediaserver.remux.plan import Plan

__all__ = ["Archive", "Cancelled", "expected_seconds", "open_archive"]


def expected_seconds(
    segments: list[Segment], start: datetime, duration: float, cache: InfoCache | None
) -> float:
    """Where an archive of `duration` seconds from `start` will end, counted from `start`.

    Read from the segments' durations (cheap, and cached for /list), not from their samples,
    following the segments as far as they join (within 1 s of each other).
    """
    reach = 0.0
    previous_end: float | None = None
    for segment in segments:
        info = segment_info(segment, cache)
        if info is None:
            break
        offset = (segment.start - start).total_seconds()
        if previous_end is not None and abs(offset - previous_end) > CONCATENATION_TOLERANCE:
            break
        previous_end = offset + info.duration
        reach = min(max(reach, previous_end), duration)
    return reach


def open_archive(
    segments: list[Segment],
    start: datetime,
    duration: float,
    fmt: str,
    cancel: threading.Event,
    cache: InfoCache | None = None,
) -> Archive:
    """An archive of [start, start+duration] in `fmt` ("fmp4" or "mp4"). Blocking.

    NoSegmentsFound when nothing in the range can be served.
    """
    plan = Plan(segments, start, duration, cancel)
    if fmt == "mp4":
        return MP4Archive(plan, cancel)
    expected = expected_seconds(segments, start, duration, cache)
    return FMP4Archive(plan, cancel, expected)
