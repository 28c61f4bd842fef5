"""Joining recorded segments into one archive by stream copy: samples are copied, never decoded.

Like MediaMTX's playback muxers this works on MP4 boxes: the sample tables of each moof are
read, the samples in range are picked, and their bytes are copied from the segment files.

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

`fmp4` is produced as it is read: the first segment's ftyp+moov, then one moof+mdat per source
fragment. `mp4` first walks the sample tables (metadata only) to compute the moov, then copies
the sample data as one mdat: moov before mdat, nothing of the video held in memory.
All of this is blocking: callers run `open_archive` and `Archive.read` in an executor.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from array import array
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vms.mediaserver.mp4read import (
    SAMPLE_IS_NON_SYNC,
    Header,
    Run,
    SegmentError,
    child,
    iter_boxes,
    iter_fragments,
    read_header,
)
from vms.mediaserver.recordings import InfoCache, NoSegmentsFound, Segment, segment_info

log = logging.getLogger(__name__)

FIRST_CHUNK = 64 * 1024
CHUNK = 1024 * 1024
# Stop waiting for a track that has no sample this long after `start`.
_SETTLE_SECONDS = 10.0
_BACKWARDS_SLACK = 1e-6


class Cancelled(Exception):
    """The client went away; the work stopped."""


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
        reach: dict[int, float] = {}  # end of the latest sample seen, per track
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
                    reach[run.track_id] = source.time(run, dts)
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
            # Lead-in alone is served only if the footage reaches `start`.
            if state.cut is None and tid in candidates and reach.get(tid, 0.0) > 0:
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


# --- writing boxes -----------------------------------------------------------------------


def box(kind: bytes, *parts: bytes) -> bytes:
    """An MP4 box of `kind` holding `parts`."""
    size = 8 + sum(len(p) for p in parts)
    return struct.pack(">I4s", size, kind) + b"".join(parts)


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    """An MP4 full box."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _be(values: array[int]) -> bytes:
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def moof_box(sequence: int, runs: list[OutRun]) -> bytes:
    """A moof for `runs` (in order), whose data follows in the next mdat in the same order."""
    trafs: list[tuple[int, list[OutRun]]] = []
    for run in runs:
        if trafs and trafs[-1][0] == run.track_id:
            trafs[-1][1].append(run)
        else:
            trafs.append((run.track_id, [run]))

    def build(data_start: int) -> bytes:
        parts = [full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))]
        position = data_start
        for track_id, track_runs in trafs:
            truns = []
            for run in track_runs:
                entries = array("I")
                for d, s, f, c in zip(run.durations, run.sizes, run.flags, run.ctos, strict=True):
                    entries.extend((d, s, f, c & 0xFFFFFFFF))
                truns.append(
                    full_box(
                        b"trun",
                        1,
                        0x1 | 0x100 | 0x200 | 0x400 | 0x800,
                        struct.pack(">Ii", len(run.sizes), position),
                        _be(entries),
                    )
                )
                position += run.data_size
            parts.append(
                box(
                    b"traf",
                    full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id)),
                    full_box(b"tfdt", 1, 0, struct.pack(">Q", track_runs[0].base_dts)),
                    *truns,
                )
            )
        return box(b"moof", *parts)

    size = len(build(0))
    return build(size + 8)


# --- archives ----------------------------------------------------------------------------


class _DataReader:
    """Reads sample data from segment files, keeping the current one open."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._fd = -1

    def read(self, path: Path, offset: int, size: int) -> bytes:
        """`size` bytes of `path` at `offset`; SegmentError if the file got shorter."""
        if path != self._path:
            self.close()
            self._fd = os.open(path, os.O_RDONLY)
            self._path = path
        data = os.pread(self._fd, size, offset)
        while len(data) < size:
            more = os.pread(self._fd, size - len(data), offset + len(data))
            if not more:
                raise SegmentError(f"{path.name} shrank while being read")
            data += more
        return data

    def close(self) -> None:
        """Close the open file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._path = None


class Archive:
    """The bytes of one /get answer, produced a chunk at a time."""

    content_length: int | None = None

    def read(self) -> bytes:
        """The next chunk; b"" at the end. Blocking."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files."""


class FMP4Archive(Archive):
    """Fragmented MP4: the first segment's header, then one fragment per source fragment."""

    def __init__(self, plan: Plan, cancel: threading.Event, expected: float) -> None:
        self._cancel = cancel
        self._fragments = plan.fragments()
        self._reader = _DataReader()
        self._sequence = 0
        header = plan.header
        self._pending = bytearray(header.ftyp + fmp4_moov(header, expected))
        self._started = False
        self._ended = False
        first = next(self._fragments, None)
        if first is None:
            raise NoSegmentsFound
        self._add(first)

    def _add(self, runs: list[OutRun]) -> None:
        self._sequence += 1
        self._pending += moof_box(self._sequence, runs)
        data_size = sum(r.data_size for r in runs)
        self._pending += struct.pack(">I4s", 8 + data_size, b"mdat")
        for run in runs:
            self._pending += self._reader.read(run.source, run.data_offset, run.data_size)

    def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        target = CHUNK if self._started else FIRST_CHUNK
        self._started = True
        while not self._ended and len(self._pending) < target:
            if self._cancel.is_set():
                raise Cancelled
            runs = next(self._fragments, None)
            if runs is None:
                self._ended = True
                break
            self._add(runs)
        chunk = bytes(self._pending)
        self._pending.clear()
        return chunk

    def close(self) -> None:
        """Release open files."""
        self._reader.close()
        self._fragments.close()


@dataclass(slots=True)
class _TrackTable:
    """What the moov of a progressive MP4 says about one track."""

    first_dts: int = -1
    durations: array[int] = field(default_factory=lambda: array("I"))
    sizes: array[int] = field(default_factory=lambda: array("I"))
    ctos: array[int] = field(default_factory=lambda: array("i"))
    sync: array[int] = field(default_factory=lambda: array("I"))
    chunk_counts: array[int] = field(default_factory=lambda: array("I"))
    chunk_offsets: array[int] = field(default_factory=lambda: array("Q"))


def _run_lengths(values: array[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for value in values:
        if out and out[-1][1] == value:
            out[-1] = (out[-1][0] + 1, value)
        else:
            out.append((1, value))
    return out


def _patch_duration(full: bytes, payload: int, v0_at: int, v1_at: int, duration: int) -> bytes:
    """Set the duration field of a tkhd/mdhd given the offsets of it in each version."""
    data = bytearray(full)
    if data[payload] == 1:
        struct.pack_into(">Q", data, payload + v1_at, duration)
    else:
        struct.pack_into(">I", data, payload + v0_at, min(duration, 0xFFFFFFFF))
    return bytes(data)


class MP4Archive(Archive):
    """Progressive MP4 with the moov first, computed from the sample tables before any data."""

    def __init__(self, plan: Plan, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._header = plan.header
        self._chunks: list[tuple[Path, int, int]] = []
        tables: dict[int, _TrackTable] = {tid: _TrackTable() for tid in plan.header.tracks}
        mdat_size = 0
        chunk_index = 0
        for runs in plan.fragments():
            if cancel.is_set():
                raise Cancelled
            for run in runs:
                table = tables[run.track_id]
                if table.first_dts < 0:
                    table.first_dts = run.base_dts
                base = len(table.sizes) + 1
                table.durations.extend(run.durations)
                table.sizes.extend(run.sizes)
                table.ctos.extend(run.ctos)
                table.sync.extend(
                    base + i for i, f in enumerate(run.flags) if not f & SAMPLE_IS_NON_SYNC
                )
                table.chunk_counts.append(len(run.sizes))
                table.chunk_offsets.append(mdat_size)
                size = run.data_size
                if (
                    self._chunks
                    and self._chunks[-1][0] == run.source
                    and (self._chunks[-1][1] + self._chunks[-1][2] == run.data_offset)
                ):
                    path, offset, length = self._chunks[-1]
                    self._chunks[-1] = (path, offset, length + size)
                else:
                    self._chunks.append((run.source, run.data_offset, size))
                mdat_size += size
                chunk_index += 1
        if chunk_index == 0:
            raise NoSegmentsFound
        self._tables = {tid: t for tid, t in tables.items() if len(t.sizes)}
        ftyp = box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2avc1mp41")
        large = mdat_size + 8 > 0xFFFFFFFF
        mdat_header_size = 16 if large else 8
        moov_size = len(self._moov(0, co64=large))
        total_head = len(ftyp) + moov_size + mdat_header_size
        co64 = large or total_head + mdat_size > 0xFFFFFFFF
        if co64 != large:
            moov_size = len(self._moov(0, co64=True))
            total_head = len(ftyp) + moov_size + mdat_header_size
        moov = self._moov(len(ftyp) + moov_size + mdat_header_size, co64=co64)
        if large:
            mdat_header = struct.pack(">I4sQ", 1, b"mdat", mdat_size + 16)
        else:
            mdat_header = struct.pack(">I4s", mdat_size + 8, b"mdat")
        self._head = ftyp + moov + mdat_header
        self.content_length = len(self._head) + mdat_size
        self._reader = _DataReader()
        self._next = 0
        self._position = 0  # within the current chunk
        self._head_sent = False

    def _moov(self, data_start: int, *, co64: bool) -> bytes:
        header = self._header
        movie_ts = header.movie_timescale
        traks = []
        movie_duration = 0
        for tid, table in self._tables.items():
            track = header.tracks[tid]
            media_duration = sum(table.durations)
            delay = table.first_dts
            track_movie = (media_duration + delay) * movie_ts // track.timescale
            movie_duration = max(movie_duration, track_movie)
            traks.append(self._trak(track.trak, table, data_start, co64, track_movie, movie_ts))
        next_id = max(header.tracks) + 1
        mvhd = full_box(
            b"mvhd",
            0,
            0,
            struct.pack(">IIII", 0, 0, movie_ts, min(movie_duration, 0xFFFFFFFF)),
            struct.pack(">IH10x", 0x00010000, 0x0100),
            struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000),
            bytes(24),
            struct.pack(">I", next_id),
        )
        return box(b"moov", mvhd, *traks)

    def _trak(
        self,
        trak: bytes,
        table: _TrackTable,
        data_start: int,
        co64: bool,
        movie_duration: int,
        movie_ts: int,
    ) -> bytes:
        tid_track = next(t for t in self._header.tracks.values() if t.trak is trak)
        media_duration = sum(table.durations)
        parts = []
        for kind, payload, end in iter_boxes(trak, 8, len(trak)):
            raw = trak[payload - 8 : end]
            if kind == b"tkhd":
                parts.append(_patch_duration(raw, 8, 20, 28, movie_duration))
            elif kind == b"mdia":
                parts.append(self._mdia(raw, table, data_start, co64, media_duration))
            elif kind == b"edts":
                continue
            else:
                parts.append(raw)
        edits = []
        if table.first_dts > 0:
            delay = table.first_dts * movie_ts // tid_track.timescale
            edits.append(struct.pack(">Iii", delay, -1, 0x00010000))
        start_cto = table.ctos[0] if len(table.ctos) and table.ctos[0] > 0 else 0
        if edits or start_cto:
            shown = (media_duration - start_cto) * movie_ts // tid_track.timescale
            edits.append(struct.pack(">Iii", shown, start_cto, 0x00010000))
            elst = full_box(b"elst", 0, 0, struct.pack(">I", len(edits)), *edits)
            parts.insert(1, box(b"edts", elst))
        return box(b"trak", *parts)

    def _mdia(
        self, mdia: bytes, table: _TrackTable, data_start: int, co64: bool, duration: int
    ) -> bytes:
        parts = []
        for kind, payload, end in iter_boxes(mdia, 8, len(mdia)):
            raw = mdia[payload - 8 : end]
            if kind == b"mdhd":
                parts.append(_patch_duration(raw, 8, 16, 24, duration))
            elif kind == b"minf":
                minf = []
                for sub, sub_payload, sub_end in iter_boxes(raw, 8, len(raw)):
                    sub_raw = raw[sub_payload - 8 : sub_end]
                    if sub == b"stbl":
                        stsd_at, stsd_end = child(sub_raw, 8, len(sub_raw), b"stsd")
                        minf.append(
                            self._stbl(sub_raw[stsd_at - 8 : stsd_end], table, data_start, co64)
                        )
                    else:
                        minf.append(sub_raw)
                parts.append(box(b"minf", *minf))
            else:
                parts.append(raw)
        return box(b"mdia", *parts)

    @staticmethod
    def _stbl(stsd: bytes, table: _TrackTable, data_start: int, co64: bool) -> bytes:
        stts = _run_lengths(table.durations)
        parts = [
            stsd,
            full_box(
                b"stts",
                0,
                0,
                struct.pack(">I", len(stts)),
                _be(array("I", [v for pair in stts for v in pair])),
            ),
        ]
        if any(table.ctos):
            ctts = _run_lengths(table.ctos)
            version = 1 if any(c < 0 for c in table.ctos) else 0
            flat = array("I", [v & 0xFFFFFFFF for pair in ctts for v in pair])
            parts.append(full_box(b"ctts", version, 0, struct.pack(">I", len(ctts)), _be(flat)))
        if len(table.sync) != len(table.sizes):
            parts.append(
                full_box(b"stss", 0, 0, struct.pack(">I", len(table.sync)), _be(table.sync))
            )
        stsc = array("I")
        previous = -1
        for index, count in enumerate(table.chunk_counts):
            if count != previous:
                stsc.extend((index + 1, count, 1))
                previous = count
        parts.append(full_box(b"stsc", 0, 0, struct.pack(">I", len(stsc) // 3), _be(stsc)))
        parts.append(
            full_box(b"stsz", 0, 0, struct.pack(">II", 0, len(table.sizes)), _be(table.sizes))
        )
        offsets = array("Q" if co64 else "I", (data_start + o for o in table.chunk_offsets))
        parts.append(
            full_box(
                b"co64" if co64 else b"stco", 0, 0, struct.pack(">I", len(offsets)), _be(offsets)
            )
        )
        return box(b"stbl", *parts)

    def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        if not self._head_sent:
            self._head_sent = True
            return self._head
        out = bytearray()
        while len(out) < CHUNK and self._next < len(self._chunks):
            if self._cancel.is_set():
                raise Cancelled
            path, offset, length = self._chunks[self._next]
            take = min(CHUNK - len(out), length - self._position)
            out += self._reader.read(path, offset + self._position, take)
            self._position += take
            if self._position == length:
                self._next += 1
                self._position = 0
        return bytes(out)

    def close(self) -> None:
        """Release open files."""
        self._reader.close()


def fmp4_moov(header: Header, seconds: float) -> bytes:
    """The first segment's moov, saying the whole archive lasts `seconds`.

    Players of a progressive fragmented MP4 take its length from mehd (or mvhd) rather than
    reading every fragment first; without it Chromium shows only the first fragment's length.
    """
    moov = header.moov
    duration = max(0, round(seconds * header.movie_timescale))
    parts = []
    for kind, payload, end in iter_boxes(moov, 8, len(moov)):
        raw = moov[payload - 8 : end]
        if kind == b"mvhd":
            parts.append(_patch_duration(raw, 8, 16, 24, duration))
        elif kind == b"trak":
            parts.append(_trak_with_duration(header, raw, seconds))
        elif kind == b"mvex":
            mvex = [full_box(b"mehd", 1, 0, struct.pack(">Q", duration))]
            mvex += [
                raw[sub - 8 : sub_end]
                for sub_kind, sub, sub_end in iter_boxes(raw, 8, len(raw))
                if sub_kind != b"mehd"
            ]
            parts.append(box(b"mvex", *mvex))
        else:
            parts.append(raw)
    return box(b"moov", *parts)


def _trak_with_duration(header: Header, trak: bytes, seconds: float) -> bytes:
    """A trak whose tkhd and mdhd say `seconds` (FFmpeg, so Chromium, reads mdhd)."""
    movie = max(0, round(seconds * header.movie_timescale))
    parts = []
    for kind, payload, end in iter_boxes(trak, 8, len(trak)):
        raw = trak[payload - 8 : end]
        if kind == b"tkhd":
            parts.append(_patch_duration(raw, 8, 20, 28, movie))
        elif kind == b"mdia":
            mdia = []
            timescale = next(
                (t.timescale for t in header.tracks.values() if t.trak == trak),
                header.movie_timescale,
            )
            for sub_kind, sub, sub_end in iter_boxes(raw, 8, len(raw)):
                sub_raw = raw[sub - 8 : sub_end]
                if sub_kind == b"mdhd":
                    sub_raw = _patch_duration(sub_raw, 8, 16, 24, round(seconds * timescale))
                mdia.append(sub_raw)
            parts.append(box(b"mdia", *mdia))
        else:
            parts.append(raw)
    return box(b"trak", *parts)


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
