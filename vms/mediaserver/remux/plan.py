"""Which samples go into an archive and at what decode times, as MediaMTX's seekAndMux places them.

- Placement: a sample's decode time is its segment's offset from `start` (the segment's start
  time minus `start`) plus its decode time in the segment, in its track's timescale, so time
  counts from `start`: footage that begins after `start` (a start before the first recording)
  sits at its offset, and samples before `start` (the lead-in from the last keyframe) have
  negative decode times. What becomes of those is each format's business (`fmp4`, `mp4`).
- End: samples at or past `start + duration` are left out; reading stops after the fragment
  in which a track got there.
- Joining: segments follow each other while each starts within 1 s of where the previous one
  ended and carries the same stream (MediaMTX's segmentFMP4CanBeConcatenated, legacy rule);
  the archive stops at the first one that does not, so a gap or a new stream ends it.
- A damaged first segment is skipped (logged); a damaged later one ends the archive, as one
  that cannot be joined. A segment being written is read up to its last complete moof+mdat
  (see mp4read.iter_fragments).

Only sample tables are read here; the sample data stays in the segment files.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path

from vms.mediaserver.mp4read import Header, Run, SegmentError, iter_fragments, read_header
from vms.mediaserver.recordings import CONCATENATION_TOLERANCE, NoSegmentsFound, Segment
from vms.mediaserver.remux.muxer import Cancelled

log = logging.getLogger(__name__)

_TOLERANCE = timedelta(seconds=CONCATENATION_TOLERANCE)


def to_units(delta: timedelta, timescale: int) -> int:
    """A time difference in a track's units, truncated as MediaMTX's durationGoToMp4 does."""
    nanos = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    whole, rest = divmod(abs(nanos), 10**9)
    units = whole * timescale + rest * timescale // 10**9
    return units if nanos >= 0 else -units


@dataclass(slots=True)
class PlacedRun:
    """Consecutive samples of one track, contiguous in one segment file, placed in time.

    `dts` are decode times in the track's units counted from the requested start; `end_dts`
    is where the last one's recorded duration ends.
    """

    track_id: int
    source: Path
    data_offset: int
    dts: list[int]
    end_dts: int
    sizes: list[int]
    flags: list[int]
    ctos: list[int]


class Plan:
    """The samples of an archive in file order, placed on the archive's clock."""

    def __init__(
        self, segments: list[Segment], start: datetime, duration: float, cancel: threading.Event
    ) -> None:
        self._segments = segments
        self._start = start
        self._end = timedelta(seconds=duration)
        self._cancel = cancel
        self.header = self._first_header()

    def _first_header(self) -> Header:
        # Read now, so that a path with nothing readable is a 404 before any byte goes out.
        while self._segments:
            opened = _open(self._segments[0])
            if opened is not None:
                os.close(opened[0])
                return opened[1]
            self._segments = self._segments[1:]
        raise NoSegmentsFound

    def runs(self) -> Generator[list[PlacedRun], None, None]:
        """The placed runs of each source fragment, until the end of the range or of the join."""
        segment = self._segments[0]
        opened = _open(segment)
        if opened is None:  # gone since the header was read
            return
        fd, header = opened
        previous_end: datetime | None = None
        queue = iter(self._segments[1:])
        try:
            while True:
                elapsed, reached_end = yield from self._segment_runs(fd, header, segment)
                os.close(fd)
                fd = -1
                if reached_end:
                    return
                previous_end = segment.start + elapsed
                following = next(queue, None)
                if following is None or self._cancel.is_set():
                    return
                opened = _open(following)
                if opened is None:
                    return
                fd, next_header = opened
                if not _joins(header, previous_end, next_header, following.start):
                    return
                header, segment = next_header, following
        finally:
            if fd >= 0:
                os.close(fd)

    def _segment_runs(
        self, fd: int, header: Header, segment: Segment
    ) -> Generator[list[PlacedRun], None, tuple[timedelta, bool]]:
        """The runs of one segment; returns how far its samples reached and whether the
        range's end was reached (MediaMTX's segmentFMP4MuxParts)."""
        offset = segment.start - self._start
        elapsed = timedelta(0)
        for fragment in iter_fragments(fd, os.fstat(fd).st_size, header, segment.path.name):
            if self._cancel.is_set():
                raise Cancelled
            placed = []
            reached_end = False
            for run in fragment.runs:
                track = header.tracks[run.track_id]
                shift = to_units(offset, track.timescale)
                end = to_units(self._end, track.timescale)
                dts, run_end = place(run, shift)
                keep = len(dts) if dts[-1] < end else bisect_left(dts, end)
                if keep < len(dts):
                    reached_end = True
                    run_end = dts[keep]
                if keep:
                    placed.append(
                        PlacedRun(
                            run.track_id,
                            segment.path,
                            run.data_offset,
                            dts[:keep],
                            run_end,
                            run.sizes[:keep],
                            run.flags[:keep],
                            run.ctos[:keep],
                        )
                    )
                reach = timedelta(seconds=(run_end - shift) / track.timescale)
                elapsed = max(elapsed, reach)
            if placed:
                yield placed
            if reached_end:
                return elapsed, True
        return elapsed, False


def _open(segment: Segment) -> tuple[int, Header] | None:
    try:
        fd = os.open(segment.path, os.O_RDONLY)
    except OSError as exc:
        log.warning("segment %s: cannot open (%s), skipped", segment.path.name, exc.strerror)
        return None
    try:
        return fd, read_header(fd, os.fstat(fd).st_size)
    except (SegmentError, OSError) as exc:
        os.close(fd)
        log.warning("segment %s: unreadable, %s", segment.path.name, exc)
        return None


def _joins(previous: Header, previous_end: datetime, current: Header, start: datetime) -> bool:
    """MediaMTX's legacy rule: the same stream, starting within 1 s of the previous end."""
    return (
        previous.compat_key == current.compat_key
        and previous_end - _TOLERANCE <= start <= previous_end + _TOLERANCE
    )


def place(run: Run, offset: int) -> tuple[list[int], int]:
    """Each sample's decode time (the segment's `offset` added), and where the run ends."""
    times = list(accumulate(run.durations, initial=run.base_dts + offset))
    end = times.pop()
    return times, end
