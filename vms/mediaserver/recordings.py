"""Recordings in MediaMTX's layout: path names, segment files, their durations and spans.

A path's recordings are fragmented-MP4 files `RECORDINGS/{path}/YYYY-MM-DD_HH-MM-SS-ffffff.mp4`.

Segment start times come from the file name, read as UTC, as MediaMTX's recordstore does
(MediaMTX reads the name in the server's local zone; this service runs its clocks in UTC).
A sample's wall-clock time is the segment start plus its decode time, as in MediaMTX. What is
inside a segment file (header, fragments, duration) is read by `mp4read`.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Lock

from vms.dates import as_utc
from vms.mediaserver.mp4read import SegmentError as SegmentError  # still importable from here
from vms.mediaserver.mp4read import iter_fragments as iter_fragments  # still importable from here
from vms.mediaserver.mp4read import read_header, segment_duration
from vms.mediaserver.params import path_name_error

log = logging.getLogger(__name__)

# Two segments belong to one span when the second starts within this of the first's end
# (MediaMTX's concatenationTolerance).
CONCATENATION_TOLERANCE = 1.0

_NAME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})_(\d{2})-(\d{2})-(\d{2})-(\d{6})\.mp4\Z")


class NoSegmentsFound(Exception):
    """No recording covers what was asked for."""

    def __init__(self) -> None:
        super().__init__("no recording segments found")


def path_dir(root: Path, name: str) -> Path | None:
    """The directory holding `name`'s segments, or None if it would fall outside `root`."""
    if path_name_error(name) is not None:
        return None
    base = root.resolve()
    target = (base / name).resolve()
    if target == base or not target.is_relative_to(base):
        return None
    return target


def parse_segment_name(filename: str) -> datetime | None:
    """A segment's start time (UTC) from its file name, or None if it is not a segment name."""
    match = _NAME_RE.match(filename)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second, micro = (int(g) for g in match.groups())
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Segment:
    """One segment file and the time of its first sample."""

    path: Path
    start: datetime


def segment_name(start: datetime) -> str:
    """File name of a segment starting at `start`: YYYY-MM-DD_HH-MM-SS-ffffff.mp4 (UTC)."""
    return as_utc(start).strftime("%Y-%m-%d_%H-%M-%S-%f") + ".mp4"


def list_segments(root: Path, name: str) -> list[Segment]:
    """Every segment of path `name`, oldest first (empty if the path has none)."""
    directory = path_dir(root, name)
    if directory is None:
        return []
    return segments_in(directory)


def segments_in(directory: Path) -> list[Segment]:
    """The segment files directly in `directory`, oldest first."""
    segments = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                start = parse_segment_name(entry.name)
                if start is not None and entry.is_file(follow_symlinks=False):
                    segments.append(Segment(Path(entry.path), start))
    except (FileNotFoundError, NotADirectoryError):
        return []
    segments.sort(key=lambda s: s.start)
    return segments


def find_segments(
    root: Path, name: str, start: datetime | None = None, end: datetime | None = None
) -> list[Segment]:
    """Segments that may hold [start, end], as MediaMTX's FindSegments picks them.

    Segments starting after `end` are dropped; with `start`, the list begins at the last
    segment starting at or before it. NoSegmentsFound when nothing is left.
    """
    segments = [s for s in list_segments(root, name) if end is None or s.start <= end]
    if not segments:
        raise NoSegmentsFound
    if start is not None:
        first = 0
        while first + 1 < len(segments) and segments[first + 1].start <= start:
            first += 1
        if segments[first].start > start:
            first = 0  # `start` lies before every segment: all of them may hold footage
        segments = segments[first:]
    return segments


@dataclass(frozen=True)
class SegmentInfo:
    """What /list needs of a segment."""

    start: datetime
    duration: float
    compat_key: tuple[tuple[int, int, bytes], ...]

    @property
    def end(self) -> datetime:
        """When the segment's footage stops."""
        return self.start + timedelta(seconds=self.duration)


class InfoCache:
    """Segment infos keyed by file identity, so a growing file is re-read and others are not."""

    def __init__(self, size: int = 16384) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int, int], SegmentInfo] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[str, int, int]) -> SegmentInfo | None:
        """The cached info, or None."""
        with self._lock:
            info = self._items.get(key)
            if info is not None:
                self._items.move_to_end(key)
            return info

    def put(self, key: tuple[str, int, int], info: SegmentInfo) -> None:
        """Remember an info, forgetting the oldest past the size."""
        with self._lock:
            self._items[key] = info
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def segment_info(segment: Segment, cache: InfoCache | None = None) -> SegmentInfo | None:
    """Duration and stream identity of a segment; None (logged) if it cannot be read."""
    try:
        fd = os.open(segment.path, os.O_RDONLY)
    except OSError as exc:
        log.warning("segment %s: cannot open (%s)", segment.path.name, exc.strerror)
        return None
    try:
        stat = os.fstat(fd)
        key = (str(segment.path), stat.st_size, stat.st_mtime_ns)
        if cache is not None and (cached := cache.get(key)) is not None:
            return cached
        try:
            header = read_header(fd, stat.st_size)
            duration = segment_duration(fd, stat.st_size, header, segment.path.name)
        except SegmentError as exc:
            log.warning("segment %s: skipped, %s", segment.path.name, exc)
            return None
        info = SegmentInfo(segment.start, duration, header.compat_key)
        if cache is not None:
            cache.put(key, info)
        return info
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Span:
    """A stretch of continuous recording, as one /list entry."""

    start: datetime
    duration: float


def concatenate(infos: list[SegmentInfo]) -> list[Span]:
    """Merge segments that follow each other within the tolerance and share a stream."""
    spans: list[Span] = []
    prev: SegmentInfo | None = None
    for info in infos:
        if info.duration <= 0:
            continue
        if spans and prev is not None and info.compat_key == prev.compat_key:
            last = spans[-1]
            last_end = last.start + timedelta(seconds=last.duration)
            gap = (info.start - last_end).total_seconds()
            if abs(gap) <= CONCATENATION_TOLERANCE:
                spans[-1] = Span(last.start, (info.end - last.start).total_seconds())
                prev = info
                continue
        spans.append(Span(info.start, info.duration))
        prev = info
    return spans


def trim_spans(spans: list[Span], start: datetime | None, end: datetime | None) -> list[Span]:
    """Clip the first span to `start` and the last to `end` (MediaMTX's trimEntries)."""
    if not spans:
        return []
    spans = list(spans)
    if start is not None:
        first = spans[0]
        if first.start + timedelta(seconds=first.duration) < start:
            spans = spans[1:]
            if not spans:
                return []
        elif first.start < start:
            cut = (start - first.start).total_seconds()
            spans[0] = Span(start, first.duration - cut)
    if end is not None:
        last = spans[-1]
        if last.start + timedelta(seconds=last.duration) > end:
            spans[-1] = Span(last.start, (end - last.start).total_seconds())
    return [s for s in spans if s.duration > 0]


def list_spans(
    root: Path,
    name: str,
    start: datetime | None = None,
    end: datetime | None = None,
    cache: InfoCache | None = None,
) -> list[Span]:
    """The /list answer for a path: continuous spans clipped to [start, end].

    NoSegmentsFound when the path has no segments there. Blocking: run it in an executor.
    """
    segments = find_segments(root, name, start, end)
    infos = [info for seg in segments if (info := segment_info(seg, cache)) is not None]
    spans = trim_spans(concatenate(infos), start, end)
    if not spans:
        raise NoSegmentsFound
    return spans
