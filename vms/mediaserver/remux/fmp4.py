"""The `fmp4` format: fragmented MP4, produced while the segments are read.

First the first segment's ftyp+moov, its durations set to the whole archive's, then parts
(moof+mdat) of about a second each, timed as MediaMTX's muxerFMP4 times them.
"""

from __future__ import annotations

import struct
import threading
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate
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
class _Pending:
    """Samples of one track not written yet, one entry per sample in each column."""

    sources: list[Path] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: array[int] = field(default_factory=lambda: array("I"))
    flags: array[int] = field(default_factory=lambda: array("I"))
    ctos: array[int] = field(default_factory=lambda: array("i"))
    durations: array[int] = field(default_factory=lambda: array("I"))

    def __len__(self) -> int:
        return len(self.sizes)

    def append(self, run: PlacedRun, start: int, stop: int, offset: int) -> None:
        """Samples `start` to `stop` of `run`, whose data begins at `offset`; durations 0."""
        sizes = run.sizes[start:stop]
        self.sources.extend([run.source] * len(sizes))
        self.offsets.extend(accumulate(sizes[:-1], initial=offset))
        self.sizes.extend(sizes)
        self.flags.extend(run.flags[start:stop])
        self.ctos.extend(run.ctos[start:stop])
        self.durations.extend(array("I", bytes(4 * len(sizes))))

    def split(self, count: int) -> _Pending:
        """The first `count` samples, taken out."""
        head = _Pending(
            self.sources[:count],
            self.offsets[:count],
            self.sizes[:count],
            self.flags[:count],
            self.ctos[:count],
            self.durations[:count],
        )
        for column in (self.sources, self.offsets, self.sizes, self.flags, self.ctos):
            del column[:count]
        del self.durations[:count]
        return head

    def clear(self) -> None:
        """Forget every sample."""
        self.split(len(self))


@dataclass(slots=True)
class _TrackState:
    """MediaMTX's muxerFMP4Track: the samples not written yet and their decode times."""

    track_id: int
    part_units: int  # one part (partDuration, 1 s) in the track's units
    first_dts: int = -1
    last_dts: int = 0
    pending: _Pending = field(default_factory=_Pending)


def moof_box(sequence: int, parts: list[tuple[int, int, _Pending]]) -> bytes:
    """A moof for `parts` (track id, base decode time, samples), data in the next mdat."""

    def build(data_start: int) -> bytes:
        boxes = [full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))]
        position = data_start
        for track_id, base_dts, samples in parts:
            count = len(samples)
            entries = array("I", bytes(16 * count))
            entries[0::4] = samples.durations
            entries[1::4] = samples.sizes
            entries[2::4] = samples.flags
            entries[3::4] = array("I", samples.ctos.tobytes())
            boxes.append(
                box(
                    b"traf",
                    full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id)),
                    full_box(b"tfdt", 1, 0, struct.pack(">Q", base_dts)),
                    full_box(
                        b"trun",
                        1,
                        0x1 | 0x100 | 0x200 | 0x400 | 0x800,
                        struct.pack(">Ii", count, position),
                        big_endian(entries),
                    ),
                )
            )
            position += sum(samples.sizes)
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
        try:
            while not self._pending and not self._ended:
                self._step()
            if not self._pending:
                raise NoSegmentsFound
        except BaseException:
            self.close()
            raise

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
        pending, dts, count = track.pending, run.dts, len(run.dts)
        offset, i = run.data_offset, 0
        # Lead-in: a keyframe starts the GOP anew; every sample lasts 0.
        while i < count and (dts[i] < 0 or track.first_dts < 0):
            sync = not run.flags[i] & SAMPLE_IS_NON_SYNC
            if dts[i] >= 0:  # the first sample at or after `start`
                track.first_dts = track.last_dts = dts[i]
            if sync:
                pending.clear()
            pending.append(run, i, i + 1, offset)
            offset += run.sizes[i]
            i += 1
        while i < count:
            # Up to the sample that makes the part a second long, which writes it.
            due = bisect_left(dts, track.first_dts + track.part_units, i)
            stop = min(due + 1, count)
            pending.durations[-1] = max(dts[i] - track.last_dts, 0)
            pending.append(run, i, stop, offset)
            pending.durations[-(stop - i) : -1] = array(
                "I",
                (max(b - a, 0) for a, b in zip(dts[i : stop - 1], dts[i + 1 : stop], strict=True)),
            )
            offset += sum(run.sizes[i:stop])
            track.last_dts = dts[stop - 1]
            i = stop
            if due < count:
                self._flush(final=False)
        if len(pending) and track.first_dts >= 0:
            pending.durations[-1] = max(run.end_dts - track.last_dts, 0)

    def _flush(self, *, final: bool) -> None:
        parts: list[tuple[int, int, _Pending]] = []
        for track in self._tracks.values():
            if track.first_dts < 0 or not len(track.pending):
                continue
            if not final and len(track.pending) < 2:
                continue
            samples = track.pending.split(len(track.pending) - (0 if final else 1))
            parts.append((track.track_id, track.first_dts, samples))
            if not final:
                track.first_dts = track.last_dts
        if not parts:
            return
        if not self._sequence_started():
            self._pending += self._header
        self._pending += moof_box(self._sequence, parts)
        self._sequence += 1
        size = sum(sum(samples.sizes) for _, _, samples in parts)
        self._pending += struct.pack(">I4s", 8 + size, b"mdat")
        for _, _, samples in parts:
            self._copy(samples)

    def _copy(self, samples: _Pending) -> None:
        """The samples' data, read in one piece wherever it is contiguous in a file."""
        source, start, length = None, 0, 0
        for path, offset, size in zip(samples.sources, samples.offsets, samples.sizes, strict=True):
            if path is source and offset == start + length:
                length += size
                continue
            if source is not None:
                self._pending += self._reader.read(source, start, length)
            source, start, length = path, offset, size
        if source is not None:
            self._pending += self._reader.read(source, start, length)

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
