"""The `fmp4` format: fragmented MP4, produced while the segments are read.

First the first segment's ftyp+moov, its durations set to the whole archive's, then parts
(moof+mdat) of about a second each, timed as MediaMTX's muxerFMP4 times them.
"""

from __future__ import annotations

import struct
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from vms.mediaserver.mp4read import SAMPLE_IS_NON_SYNC, Header
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
from vms.mediaserver.remux.plan import PlacedRun, Plan

# The first read stops early, so the header and first fragment go out without waiting for a
# full chunk.
FIRST_CHUNK = 64 * 1024


@dataclass(slots=True)
class _Sample:
    source: Path
    offset: int
    size: int
    flags: int
    cto: int
    duration: int = 0


@dataclass(slots=True)
class _TrackState:
    """MediaMTX's muxerFMP4Track: the samples not written yet and their decode times."""

    track_id: int
    part_units: int  # one part (partDuration, 1 s) in the track's units
    first_dts: int = -1
    last_dts: int = 0
    samples: list[_Sample] = field(default_factory=list)


def moof_box(sequence: int, parts: list[tuple[int, int, list[_Sample]]]) -> bytes:
    """A moof for `parts` (track id, base decode time, samples), data in the next mdat."""

    def build(data_start: int) -> bytes:
        boxes = [full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))]
        position = data_start
        for track_id, base_dts, samples in parts:
            entries = array("I")
            for sample in samples:
                entries.extend(
                    (sample.duration, sample.size, sample.flags, sample.cto & 0xFFFFFFFF)
                )
            boxes.append(
                box(
                    b"traf",
                    full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id)),
                    full_box(b"tfdt", 1, 0, struct.pack(">Q", base_dts)),
                    full_box(
                        b"trun",
                        1,
                        0x1 | 0x100 | 0x200 | 0x400 | 0x800,
                        struct.pack(">Ii", len(samples), position),
                        big_endian(entries),
                    ),
                )
            )
            position += sum(sample.size for sample in samples)
        return box(b"moof", *boxes)

    size = len(build(0))
    return build(size + 8)


class FMP4Archive(Archive):
    """Fragmented MP4 as MediaMTX's muxerFMP4 writes it: header, then parts of about 1 s.

    Lead-in samples (before `start`, from the last keyframe) get zero duration, so the first
    sample at or after `start` plays at once; a keyframe exactly at or after `start` drops the
    lead-in. Each sample lasts until the next one's decode time (never less than 0), the last
    one its recorded duration. The last sample of a track waits for the next part.
    """

    def __init__(self, plan: Plan, cancel: threading.Event, expected: float) -> None:
        self._cancel = cancel
        self._runs = plan.runs()
        self._reader = SampleReader()
        self._sequence = 0
        header = plan.header
        self._tracks = {
            # A part lasts partDuration (1 s): a timescale's worth of units.
            tid: _TrackState(tid, track.timescale)
            for tid, track in header.tracks.items()
        }
        self._header = header.ftyp + fmp4_moov(header, expected)
        self._pending = bytearray()
        self._started = False
        self._ended = False
        # MediaMTX answers 404 when no sample at or after `start` exists: find out now.
        while not self._pending and not self._ended:
            self._step()
        if not self._pending:
            raise NoSegmentsFound

    def _step(self) -> None:
        runs = next(self._runs, None)
        if runs is None:
            self._ended = True
            self._flush(final=True)
            return
        for run in runs:
            self._add(run)

    def _add(self, run: PlacedRun) -> None:
        track = self._tracks.get(run.track_id)
        if track is None:
            return
        offset = run.data_offset
        for dts, size, flags, cto in zip(run.dts, run.sizes, run.flags, run.ctos, strict=True):
            sample = _Sample(run.source, offset, size, flags, cto)
            offset += size
            sync = not flags & SAMPLE_IS_NON_SYNC
            if dts >= 0:
                if track.first_dts < 0:
                    track.first_dts = dts
                    if sync:
                        track.samples.clear()
                else:
                    track.samples[-1].duration = max(dts - track.last_dts, 0)
                track.samples.append(sample)
                track.last_dts = dts
                if track.last_dts - track.first_dts >= track.part_units:
                    self._flush(final=False)
            else:
                if sync:
                    track.samples.clear()
                track.samples.append(sample)
        if track.samples and track.first_dts >= 0:
            track.samples[-1].duration = max(run.end_dts - track.last_dts, 0)

    def _flush(self, *, final: bool) -> None:
        parts: list[tuple[int, int, list[_Sample]]] = []
        for track in self._tracks.values():
            if track.first_dts < 0 or not track.samples:
                continue
            if not final and len(track.samples) < 2:
                continue
            samples = track.samples if final else track.samples[:-1]
            parts.append((track.track_id, track.first_dts, samples))
            if not final:
                track.samples = track.samples[-1:]
                track.first_dts = track.last_dts
        if not parts:
            return
        if not self._sequence_started():
            self._pending += self._header
        self._pending += moof_box(self._sequence, parts)
        self._sequence += 1
        size = sum(s.size for _, _, samples in parts for s in samples)
        self._pending += struct.pack(">I4s", 8 + size, b"mdat")
        for _, _, samples in parts:
            for sample in samples:
                self._pending += self._reader.read(sample.source, sample.offset, sample.size)

    def _sequence_started(self) -> bool:
        return self._sequence > 0

    def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        target = CHUNK if self._started else FIRST_CHUNK
        self._started = True
        while not self._ended and len(self._pending) < target:
            if self._cancel.is_set():
                raise Cancelled
            self._step()
        chunk = bytes(self._pending)
        self._pending.clear()
        return chunk

    def close(self) -> None:
        """Release open files."""
        self._reader.close()
        self._runs.close()


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
