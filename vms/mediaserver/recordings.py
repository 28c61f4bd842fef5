"""Recordings in MediaMTX's layout: path names, segment files, their durations and spans.

A path's recordings are fragmented-MP4 files `RECORDINGS/{path}/YYYY-MM-DD_HH-MM-SS-ffffff.mp4`.

Segment start times come from the file name, read in the process's local time zone (`TZ`), as
MediaMTX's recordstore reads them (`time.Local`); names are written the same way. A sample's
wall-clock time is the segment's place in time plus its decode time, as in MediaMTX. What is
inside a segment file (header, fragments, duration, `mtxi`) is read by `mp4read`; the index
of a path's segments, kept current as files come and go, is `index`.
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
    """A segment's start time (aware, UTC) from its file name read in the local time zone.

    None if it is not a segment name. A local time that occurs twice (when clocks go back)
    is read as its first occurrence, one that never occurs as if the clocks had not moved.
    """
    match = _NAME_RE.match(filename)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second, micro = (int(g) for g in match.groups())
        return datetime(year, month, day, hour, minute, second, micro).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def is_segment_name(filename: str) -> bool:
    """Whether `filename` is named like a segment (its time is not checked)."""
    return _NAME_RE.match(filename) is not None


@dataclass(frozen=True)
class Segment:
    """One segment file and where its first sample sits in time.

    That is the time in its name, or, inside a run of segments joined by `mtxi`, the first
    segment's time plus the DTS between them (as MediaMTX places them).
    """

    path: Path
    start: datetime


def segment_name(start: datetime) -> str:
    """File name of a segment starting at `start`: YYYY-MM-DD_HH-MM-SS-ffffff.mp4, local time."""
    return as_utc(start).astimezone().strftime("%Y-%m-%d_%H-%M-%S-%f") + ".mp4"


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
