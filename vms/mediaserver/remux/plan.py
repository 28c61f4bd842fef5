"""Which samples go into an archive, in what order, at what decode times.

- Start: every track begins at its last keyframe at or before `start` (or, when there is none
  there, its first keyframe after it); the archive's clock starts at the earliest of those.
  Frames are shown with their real durations, so an archive is at most one GOP longer than
  asked for. (MediaMTX squeezes the lead-in frames to zero duration instead; browsers do not
  all like zero-length frames.)
- End: samples whose time is at or past `start + duration` are left out.
- Time runs continuously: each sample follows the previous one by its recorded duration, so a
  gap between recordings is skipped, never filled. Samples that would go back in time (two
  overlapping recordings) are dropped, and a track then waits for its next keyframe.
- A damaged segment is skipped (logged); one whose stream differs from the first (another
  codec or resolution) is skipped too; a segment being written is read up to its last complete
  moof+mdat only (see mp4read.iter_fragments).

Only sample tables are read here; the sample data stays in the segment files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vms.mediaserver.mp4read import (
    SAMPLE_IS_NON_SYNC,
    Header,
    Run,
    SegmentError,
    iter_fragments,
    read_header,
)
from vms.mediaserver.recordings import NoSegmentsFound, Segment
from vms.mediaserver.remux.muxer import Cancelled

log = logging.getLogger(__name__)

# Stop waiting for a track that has no sample this long after `start`.
_SETTLE_SECONDS = 10.0
_BACKWARDS_SLACK = 1e-6


@dataclass(slots=True)
class OutRun:
    """Consecutive samples of one track whose data is contiguous in one segment file."""

    track_id: int
    source: Path
    data_offset: int
    base_dts: int
    durations: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    ctos: list[int] = field(default_factory=list)

    @property
    def data_size(self) -> int:
        """Bytes of sample data."""
        return sum(self.sizes)


@dataclass(slots=True)
class _Source:
    """A source fragment and where its segment sits in time."""

    path: Path
    offset: float  # seconds from the requested start to the segment's start
    header: Header
    runs: list[Run]

    def time(self, run: Run, dts: int) -> float:
        """Seconds from the requested start to decode time `dts` of `run`'s track."""
        return self.offset + dts / self.header.tracks[run.track_id].timescale


@dataclass(slots=True)
class _TrackState:
    timescale: int
    cut: tuple[int, int, int] | None = None  # (source index, run index, sample index)
    cut_time: float = 0.0
    out_dts: int = -1
    last_time: float = float("-inf")
    need_sync: bool = False
    done: bool = False


def _sources(
    segments: list[Segment], start: datetime, duration: float, cancel: threading.Event
) -> Generator[_Source, None, None]:
    """Fragments of the usable segments in time order, until past the end of the range."""
    first: Header | None = None
    for segment in segments:
        offset = (segment.start - start).total_seconds()
        if offset >= duration:
            return
        if cancel.is_set():
            raise Cancelled
        try:
            fd = os.open(segment.path, os.O_RDONLY)
        except OSError as exc:
            log.warning("segment %s: cannot open (%s), skipped", segment.path.name, exc.strerror)
            continue
        try:
            size = os.fstat(fd).st_size
            try:
                header = read_header(fd, size)
            except SegmentError as exc:
                log.warning("segment %s: skipped, %s", segment.path.name, exc)
                continue
            if first is None:
                first = header
            elif header.compat_key != first.compat_key:
                log.warning("segment %s: not the first one's stream, skipped", segment.path.name)
                continue
            for fragment in iter_fragments(fd, size, header, segment.path.name):
                if cancel.is_set():
                    raise Cancelled
                source = _Source(segment.path, offset, header, fragment.runs)
                yield source
                if fragment.runs and all(
                    source.time(r, r.base_dts) >= duration for r in fragment.runs
                ):
                    break
        finally:
            os.close(fd)


class Plan:
    """The samples of an archive in output order, with continuous decode times."""

    def __init__(
        self, segments: list[Segment], start: datetime, duration: float, cancel: threading.Event
    ) -> None:
        self.duration = duration
        self._iter = _sources(segments, start, duration, cancel)
        self._buffer: list[_Source] = []
        self._tracks: dict[int, _TrackState] = {}
        self._t0 = 0.0
        self.header = self._settle()

    def _settle(self) -> Header:
        """Read ahead until each track's first sample is known; fix the archive's zero time."""
        header: Header | None = None
        started: set[int] = set()
        for source in self._iter:
            if header is None:
                header = source.header
                self._tracks = {tid: _TrackState(t.timescale) for tid, t in header.tracks.items()}
            self._buffer.append(source)
            for run in source.runs:
                if source.time(run, run.end_dts) > 0:
                    started.add(run.track_id)
            late = any(source.time(r, r.base_dts) > _SETTLE_SECONDS for r in source.runs)
            if started >= set(self._tracks) or late:
                break
        if header is None:
            raise NoSegmentsFound
        candidates: dict[int, tuple[tuple[int, int, int], float]] = {}
        visible: set[int] = set()  # tracks with a sample at or after `start`
        for si, source in enumerate(self._buffer):
            for ri, run in enumerate(source.runs):
                state = self._tracks[run.track_id]
                if state.cut is not None:
                    continue
                dts = run.base_dts
                for i, flag in enumerate(run.flags):
                    t = source.time(run, dts)
                    dts += run.durations[i]
                    if t >= self.duration:
                        break
                    if t >= 0:
                        visible.add(run.track_id)
                    sync = not flag & SAMPLE_IS_NON_SYNC
                    if t <= 0:
                        if sync:
                            candidates[run.track_id] = ((si, ri, i), t)
                        continue
                    found = candidates.get(run.track_id)
                    if found is None and sync:
                        found = ((si, ri, i), t)
                    if found is not None:
                        state.cut, state.cut_time = found
                        break
        for tid, state in self._tracks.items():
            # Lead-in alone is served only if a sample starts at or after `start`: MediaMTX
            # answers 404 for a start inside the last frame (TestOnGetInMiddleOfLastSample).
            if state.cut is None and tid in candidates and tid in visible:
                state.cut, state.cut_time = candidates[tid]
        cut_times = [s.cut_time for s in self._tracks.values() if s.cut is not None]
        if not cut_times:
            raise NoSegmentsFound
        self._t0 = min(cut_times)
        return header

    @property
    def t0(self) -> float:
        """Seconds from the requested start to the archive's first sample (<= 0 usually)."""
        return self._t0

    def fragments(self) -> Generator[list[OutRun], None, None]:
        """Output fragments, each a list of runs taken from one source fragment."""
        buffered, self._buffer = self._buffer, []
        for si, source in enumerate(buffered):
            runs = self._select(si, source)
            if runs:
                yield runs
        for source in self._iter:
            runs = self._select(-1, source)
            if runs:
                yield runs
            if all(s.done or s.cut is None for s in self._tracks.values()):
                return

    def _select(self, si: int, source: _Source) -> list[OutRun]:
        out: list[OutRun] = []
        for ri, run in enumerate(source.runs):
            state = self._tracks.get(run.track_id)
            if state is None or state.done or state.cut is None:
                continue
            first = 0
            if state.out_dts < 0:
                if si < 0 or (si, ri) < state.cut[:2]:
                    continue
                if (si, ri) == state.cut[:2]:
                    first = state.cut[2]
            dts = run.base_dts + sum(run.durations[:first])
            offset = run.data_offset + sum(run.sizes[:first])
            t_first = source.time(run, dts)
            t_last = source.time(run, run.base_dts + sum(run.durations[:-1]))
            if (
                first == 0
                and state.out_dts >= 0
                and not state.need_sync
                and t_first >= state.last_time - _BACKWARDS_SLACK
                and t_last < self.duration
            ):
                # The common case: the whole run goes out as it is.
                out.append(
                    OutRun(
                        run.track_id,
                        source.path,
                        offset,
                        state.out_dts,
                        run.durations,
                        run.sizes,
                        run.flags,
                        run.ctos,
                    )
                )
                state.out_dts += sum(run.durations)
                state.last_time = t_last
                continue
            current: OutRun | None = None
            for i in range(first, len(run.flags)):
                t = source.time(run, dts)
                if t >= self.duration:
                    state.done = True
                    break
                take = True
                if t < state.last_time - _BACKWARDS_SLACK:
                    take = False
                    state.need_sync = True
                elif state.need_sync:
                    take = not run.flags[i] & SAMPLE_IS_NON_SYNC
                    state.need_sync = not take
                if take:
                    if state.out_dts < 0:
                        state.out_dts = round((t - self._t0) * state.timescale)
                    if current is None:
                        current = OutRun(run.track_id, source.path, offset, state.out_dts)
                        out.append(current)
                    current.durations.append(run.durations[i])
                    current.sizes.append(run.sizes[i])
                    current.flags.append(run.flags[i])
                    current.ctos.append(run.ctos[i])
                    state.out_dts += run.durations[i]
                    state.last_time = t
                else:
                    current = None
                dts += run.durations[i]
                offset += run.sizes[i]
        return out
