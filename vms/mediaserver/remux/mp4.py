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
from vms.mediaserver.remux.plan import Plan


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
        self._reader = SampleReader()
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
            traks.append(self._trak(track, table, data_start, co64, track_movie, movie_ts))
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
        track: Track,
        table: _TrackTable,
        data_start: int,
        co64: bool,
        movie_duration: int,
        movie_ts: int,
    ) -> bytes:
        media_duration = sum(table.durations)

        def stbl(raw: bytes) -> bytes:
            stsd_at, stsd_end = child(raw, 8, len(raw), b"stsd")
            return self._stbl(raw[stsd_at - 8 : stsd_end], table, data_start, co64)

        durations = duration_edits(movie_duration, media_duration)
        # The source's edit list is about its own samples; this archive's is made below.
        parts = edited_children(track.trak, {**durations, b"mdia/minf/stbl": stbl, b"edts": drop})
        edits = []
        if table.first_dts > 0:
            delay = table.first_dts * movie_ts // track.timescale
            edits.append(struct.pack(">Iii", delay, -1, 0x00010000))
        start_cto = table.ctos[0] if len(table.ctos) and table.ctos[0] > 0 else 0
        if edits or start_cto:
            shown = (media_duration - start_cto) * movie_ts // track.timescale
            edits.append(struct.pack(">Iii", shown, start_cto, 0x00010000))
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
