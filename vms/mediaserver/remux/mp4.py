"""The `mp4` format: progressive MP4 with the moov first, its length known before any data.

The sample tables are walked first (metadata only) to compute the moov, then the sample data
is copied as one mdat: moov before mdat, nothing of the video held in memory.
"""

from __future__ import annotations

import struct
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from vms.mediaserver.mp4read import SAMPLE_IS_NON_SYNC, Track, child
from vms.mediaserver.recordings import NoSegmentsFound
from vms.mediaserver.remux.boxes import (
    big_endian,
    box,
    drop,
    duration_edits,
    edited_children,
    full_box,
)
from vms.mediaserver.remux.muxer import CHUNK, Archive, Cancelled, SampleReader
from vms.mediaserver.remux.plan import PlacedRun, Plan

# mediacommon's pmp4 writes every movie-level duration in milliseconds.
MOVIE_TIMESCALE = 1000


@dataclass(slots=True)
class _TrackTable:
    """What the moov of a progressive MP4 says about one track (MediaMTX's muxerMP4Track)."""

    dts: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("I"))
    ctos: array[int] = field(default_factory=lambda: array("i"))
    sync: array[int] = field(default_factory=lambda: array("I"))
    # Runs of samples whose data is contiguous: (order in the mdat, first sample, count).
    chunks: list[tuple[int, int, int]] = field(default_factory=list)
    end_dts: int = 0
    durations: array[int] = field(default_factory=lambda: array("I"))
    chunk_counts: array[int] = field(default_factory=lambda: array("I"))
    chunk_offsets: array[int] = field(default_factory=lambda: array("Q"))

    @property
    def time_offset(self) -> int:
        """The first sample's decode time: below 0 it is hidden by the edit list."""
        return self.dts[0]

    def clear(self) -> None:
        """Forget the samples so far: a keyframe before `start` starts the GOP anew."""
        for values in (self.dts, self.sizes, self.ctos, self.sync):
            del values[:]
        self.chunks.clear()

    def finish(self) -> None:
        """Each sample lasts until the next one's decode time (never below 0)."""
        self.durations = array(
            "I", (max(b - a, 0) for a, b in zip(self.dts, self.dts[1:], strict=False))
        )
        self.durations.append(max(self.end_dts - self.dts[-1], 0))


def _run_lengths(values: array[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for value in values:
        if out and out[-1][1] == value:
            out[-1] = (out[-1][0] + 1, value)
        else:
            out.append((1, value))
    return out


def _reset_at(table: _TrackTable, run: PlacedRun) -> int | None:
    """The last sample of `run` at which the track starts anew, if any (muxerMP4.writeSample).

    A keyframe before `start` starts a new GOP, and so does the first keyframe at or after it
    when samples before `start` came first; both can happen only while decode times are
    below 0, so only the run's first samples are looked at.
    """
    found = None
    previous = table.dts[-1] if len(table.dts) else None
    for i, (dts, flags) in enumerate(zip(run.dts, run.flags, strict=True)):
        if previous is not None and previous >= 0:
            break
        if not flags & SAMPLE_IS_NON_SYNC and (dts < 0 or previous is not None):
            found = i
        previous = dts
    return found


def _add_run(table: _TrackTable, run: PlacedRun, pieces: list[tuple[Path, int, int, int]]) -> None:
    """Append `run` to its track's table and its data to the mdat's pieces."""
    first = _reset_at(table, run)
    if first is not None:
        table.clear()
    first = first or 0
    index = len(table.dts)
    offset = run.data_offset + sum(run.sizes[:first])
    sizes = run.sizes[first:]
    flags = run.flags[first:]
    table.dts.extend(run.dts[first:])
    table.sizes.extend(sizes)
    # MediaMTX zeroes a keyframe's composition offset ("Missing key frame" warnings otherwise).
    table.ctos.extend(
        c if f & SAMPLE_IS_NON_SYNC else 0 for f, c in zip(flags, run.ctos[first:], strict=True)
    )
    table.sync.extend(index + 1 + i for i, f in enumerate(flags) if not f & SAMPLE_IS_NON_SYNC)
    table.end_dts = run.end_dts
    size = sum(sizes)
    last = pieces[-1] if pieces else None
    chunk = table.chunks[-1] if table.chunks else None
    if (
        last is not None
        and chunk is not None
        and chunk[0] == len(pieces) - 1
        and last[0] == run.source
        and last[1] + last[2] == offset
    ):
        pieces[-1] = (last[0], last[1], last[2] + size, last[3])
        table.chunks[-1] = (chunk[0], chunk[1], chunk[2] + len(sizes))
    else:
        table.chunks.append((len(pieces), index, len(sizes)))
        pieces.append((run.source, offset, size, run.track_id))


class MP4Archive(Archive):
    """Progressive MP4 with the moov first, as MediaMTX's muxerMP4 and mediacommon's pmp4.

    Every track keeps the GOP that holds `start`: its samples before `start` are in the file
    and the edit list skips them, so playback starts exactly at `start`; footage that begins
    after `start` is delayed by an empty edit. A keyframe's composition offset is set to 0,
    as MediaMTX does.
    """

    def __init__(self, plan: Plan, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._header = plan.header
        tables: dict[int, _TrackTable] = {tid: _TrackTable() for tid in plan.header.tracks}
        # The mdat's pieces in order: (source, offset, size, track, chunk index in the track).
        pieces: list[tuple[Path, int, int, int]] = []
        visible = False
        placed = plan.runs()
        try:
            for runs in placed:
                if cancel.is_set():
                    raise Cancelled
                for run in runs:
                    table = tables.get(run.track_id)
                    if table is None:
                        continue
                    _add_run(table, run, pieces)
                    visible = visible or run.dts[-1] >= 0
        finally:
            placed.close()  # its segment file, when this stops early
        self._tables = {tid: t for tid, t in tables.items() if len(t.dts)}
        if not visible or not self._tables:
            raise NoSegmentsFound
        # Pieces of samples a later keyframe dropped are not in any table's chunks any more.
        kept = sorted(c[0] for t in self._tables.values() for c in t.chunks)
        where: dict[int, int] = {}
        self._chunks: list[tuple[Path, int, int]] = []
        mdat_size = 0
        for order in kept:
            source, offset, size, _ = pieces[order]
            where[order] = mdat_size
            self._chunks.append((source, offset, size))
            mdat_size += size
        for table in self._tables.values():
            table.finish()
            table.chunk_counts = array("I", (count for _, _, count in table.chunks))
            table.chunk_offsets = array("Q", (where[order] for order, _, _ in table.chunks))
        ftyp = box(b"ftyp", b"isom", struct.pack(">I", 1), b"isomiso2mp41mp42")
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
        self._reader = SampleReader()
        self._next = 0
        self._position = 0  # within the current chunk
        self._head_sent = False

    def _moov(self, data_start: int, *, co64: bool) -> bytes:
        header = self._header
        traks = []
        movie_duration = 0
        for tid, table in self._tables.items():
            track = header.tracks[tid]
            shown = sum(table.durations) + table.time_offset
            track_movie = max(shown, 0) * MOVIE_TIMESCALE // track.timescale
            movie_duration = max(movie_duration, track_movie)
            traks.append(self._trak(track, table, data_start, co64, track_movie))
        next_id = max(header.tracks) + 1
        mvhd = full_box(
            b"mvhd",
            0,
            0,
            struct.pack(">IIII", 0, 0, MOVIE_TIMESCALE, min(movie_duration, 0xFFFFFFFF)),
            struct.pack(">IH10x", 0x00010000, 0x0100),
            struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000),
            bytes(24),
            struct.pack(">I", next_id),
        )
        return box(b"moov", mvhd, *traks)

    def _trak(
        self, track: Track, table: _TrackTable, data_start: int, co64: bool, movie_duration: int
    ) -> bytes:
        media_duration = sum(table.durations)
        offset = table.time_offset

        def stbl(raw: bytes) -> bytes:
            stsd_at, stsd_end = child(raw, 8, len(raw), b"stsd")
            return self._stbl(raw[stsd_at - 8 : stsd_end], table, data_start, co64)

        durations = duration_edits(movie_duration, max(media_duration + offset, 0))
        # The source's edit list is about its own samples; this archive's is made below
        # (mediacommon's pmp4 marshalELST).
        parts = edited_children(track.trak, {**durations, b"mdia/minf/stbl": stbl, b"edts": drop})

        def to_movie(units: int) -> int:
            return min(units * MOVIE_TIMESCALE // track.timescale, 0xFFFFFFFF)

        if offset > 0:  # the footage begins after `start`: wait for it
            edits = [
                struct.pack(">Iii", to_movie(offset), -1, 0x00010000),
                struct.pack(">Iii", to_movie(media_duration), 0, 0x00010000),
            ]
        else:  # skip the lead-in: play from `start`
            shown = max(media_duration + offset, 0)
            edits = [struct.pack(">Iii", to_movie(shown), -offset, 0x00010000)]
        elst = full_box(b"elst", 0, 0, struct.pack(">I", len(edits)), *edits)
        parts.insert(1, box(b"edts", elst))
        return box(b"trak", *parts)

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
                big_endian(array("I", [v for pair in stts for v in pair])),
            ),
        ]
        if any(table.ctos):
            ctts = _run_lengths(table.ctos)
            version = 1 if any(c < 0 for c in table.ctos) else 0
            flat = array("I", [v & 0xFFFFFFFF for pair in ctts for v in pair])
            parts.append(
                full_box(b"ctts", version, 0, struct.pack(">I", len(ctts)), big_endian(flat))
            )
        if len(table.sync) != len(table.sizes):
            parts.append(
                full_box(b"stss", 0, 0, struct.pack(">I", len(table.sync)), big_endian(table.sync))
            )
        stsc = array("I")
        previous = -1
        for index, count in enumerate(table.chunk_counts):
            if count != previous:
                stsc.extend((index + 1, count, 1))
                previous = count
        parts.append(full_box(b"stsc", 0, 0, struct.pack(">I", len(stsc) // 3), big_endian(stsc)))
        parts.append(
            full_box(
                b"stsz", 0, 0, struct.pack(">II", 0, len(table.sizes)), big_endian(table.sizes)
            )
        )
        offsets = array("Q" if co64 else "I", (data_start + o for o in table.chunk_offsets))
        parts.append(
            full_box(
                b"co64" if co64 else b"stco",
                0,
                0,
                struct.pack(">I", len(offsets)),
                big_endian(offsets),
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
