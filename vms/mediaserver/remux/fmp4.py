"""The `fmp4` format: fragmented MP4, produced while the segments are read.

First the first segment's ftyp+moov, its durations set to the whole archive's, then one
moof+mdat per source fragment.
"""

from __future__ import annotations

import struct
import threading
from array import array

from vms.mediaserver.mp4read import Header, iter_boxes
from vms.mediaserver.recordings import NoSegmentsFound
from vms.mediaserver.remux.boxes import big_endian, box, full_box, patch_duration
from vms.mediaserver.remux.muxer import CHUNK, Archive, Cancelled, SampleReader
from vms.mediaserver.remux.plan import OutRun, Plan

# The first read stops early, so the header and first fragment go out without waiting for a
# full chunk.
FIRST_CHUNK = 64 * 1024


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
                        big_endian(entries),
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


class FMP4Archive(Archive):
    """Fragmented MP4: the first segment's header, then one fragment per source fragment."""

    def __init__(self, plan: Plan, cancel: threading.Event, expected: float) -> None:
        self._cancel = cancel
        self._fragments = plan.fragments()
        self._reader = SampleReader()
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
            parts.append(patch_duration(raw, 8, 16, 24, duration))
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
            parts.append(patch_duration(raw, 8, 20, 28, movie))
        elif kind == b"mdia":
            mdia = []
            timescale = next(
                (t.timescale for t in header.tracks.values() if t.trak == trak),
                header.movie_timescale,
            )
            for sub_kind, sub, sub_end in iter_boxes(raw, 8, len(raw)):
                sub_raw = raw[sub - 8 : sub_end]
                if sub_kind == b"mdhd":
                    sub_raw = patch_duration(sub_raw, 8, 16, 24, round(seconds * timescale))
                mdia.append(sub_raw)
            parts.append(box(b"mdia", *mdia))
        else:
            parts.append(raw)
    return box(b"trak", *parts)
