"""Joining recorded segments into one archive by stream copy: samples are copied, never decoded.

Like MediaMTX's playback muxers this works on MP4 boxes: the sample tables of each moof are
read, the samples in range are picked, and their bytes are copied from the segment files.

- `plan`: which samples go in, at what times (the rules for the start, the end and gaps).
- `muxer`: the Archive interface each format implements, Cancelled, reading sample data.
- `fmp4` and `mp4`: one Archive per format; `boxes`: writing the boxes they are made of.

All of this is blocking: callers run `open_archive` and `Archive.read` in an executor.
"""

from __future__ import annotations

import threading
from datetime import datetime

from vms.mediaserver.recordings import InfoCache, Segment, segment_info
from vms.mediaserver.remux.fmp4 import FMP4Archive
from vms.mediaserver.remux.mp4 import MP4Archive
from vms.mediaserver.remux.muxer import Archive, Cancelled
from vms.mediaserver.remux.plan import Plan

__all__ = ["Archive", "Cancelled", "expected_seconds", "open_archive"]


def expected_seconds(
    segments: list[Segment], start: datetime, duration: float, t0: float, cache: InfoCache | None
) -> float:
    """How long an archive from `t0` to `duration` (seconds from `start`) will be, gaps left out.

    Read from the segments' durations (cheap, and cached for /list), not from their samples.
    """
    total = 0.0
    covered = t0
    for segment in segments:
        info = segment_info(segment, cache)
        if info is None:
            continue
        begin = max((segment.start - start).total_seconds(), covered)
        end = min((segment.start - start).total_seconds() + info.duration, duration)
        if end > begin:
            total += end - begin
            covered = end
    return total


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
    expected = expected_seconds(segments, start, duration, plan.t0, cache)
    return FMP4Archive(plan, cancel, expected)
