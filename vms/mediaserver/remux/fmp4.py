"""The `fmp4` format: fragmented MP4, produced while the segments are read.

First the first segment's ftyp+moov, its durations set to the whole archive's, then one
moof+mdat per source fragment.
"""

from __future__ import annotations

import struct
import threading
from array import array

from vms.mediaserver.mp4read import Header
from vms.mediaserver.recordings import NoSegmentsFound
from vms.mediaserver.remux.boxes import (
    big_endian,
    box,
    drop,
    duration_edits,
    edited,
    edited_children,
    full_box,
    with_duration,
)
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
    FFmpeg, so Chromium, reads each track's length from its mdhd: that is set too.
    """
    duration = max(0, round(seconds * header.movie_timescale))
    mehd = full_box(b"mehd", 1, 0, struct.pack(">Q", duration))
    timescales = {t.trak: t.timescale for t in header.tracks.values()}

    def trak(raw: bytes) -> bytes:
        media = round(seconds * timescales.get(raw, header.movie_timescale))
        return edited(raw, duration_edits(duration, media))

    return edited(
        header.moov,
        {
            b"mvhd": lambda raw: with_duration(raw, duration),
            b"trak": trak,
            b"mvex": lambda raw: box(b"mvex", mehd, *edited_children(raw, {b"mehd": drop})),
        },
    )
