"""Recordings in MediaMTX's layout: segment files, their fragments, durations and spans.

A path's recordings are fragmented-MP4 files `RECORDINGS/{path}/YYYY-MM-DD_HH-MM-SS-ffffff.mp4`.

Segment start times come from the file name, read as UTC, as MediaMTX's recordstore does
(MediaMTX reads the name in the server's local zone; this service runs its clocks in UTC).
Newer MediaMTX versions also store an `mtxi` box (stream id, segment number, DTS, NTP time)
in the header; it is not needed to place samples and is ignored here, so files written by any
muxer with the same naming work. A sample's wall-clock time is the segment start plus its
decode time (`tfdt` + preceding durations) over the track's timescale, again as in MediaMTX.

A segment's duration is read cheaply: `mvhd.duration` when the writer filled it in (MediaMTX
does when it closes a segment), otherwise by hopping over box headers to the last complete
moof+mdat and adding up that fragment's sample durations. A segment still being written is
cut at its last complete moof+mdat; anything after it is never read.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Lock

from vms.dates import as_utc

log = logging.getLogger(__name__)

# Two segments belong to one span when the second starts within this of the first's end
# (MediaMTX's concatenationTolerance).
CONCATENATION_TOLERANCE = 1.0

SAMPLE_IS_NON_SYNC = 0x10000

_NAME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})_(\d{2})-(\d{2})-(\d{2})-(\d{6})\.mp4\Z")
_PATH_RE = re.compile(r"^[0-9a-zA-Z_\-/.~:]+\Z")
_MAX_HEADER = 4 * 1024 * 1024
_MAX_MOOF = 16 * 1024 * 1024


class NoSegmentsFound(Exception):
    """No recording covers what was asked for."""

    def __init__(self) -> None:
        super().__init__("no recording segments found")


class SegmentError(Exception):
    """A segment file is not a readable fragmented MP4."""


def path_name_error(name: str) -> str | None:
    """Why `name` is not a valid path name (MediaMTX's rules, plus no dot segments), or None."""
    if name == "":
        return "cannot be empty"
    if name.startswith("/"):
        return "can't begin with a slash"
    if name.endswith("/"):
        return "can't end with a slash"
    if not _PATH_RE.match(name):
        return (
            "can contain only alphanumeric characters, underscore, dot, tilde, minus, slash, colon"
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "can't contain empty, '.' or '..' elements"
    return None


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


# --- boxes -------------------------------------------------------------------------------


def iter_boxes(
    buf: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload offset, box end) for each box in buf[start:end]; SegmentError if broken."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise SegmentError("truncated box header")
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise SegmentError("truncated box header")
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise SegmentError(f"box {kind!r} overruns its parent")
        yield kind, pos + header, pos + size
        pos += size


def child(buf: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    """(payload offset, end) of the first `kind` box in buf[start:end]; SegmentError if none."""
    for found, payload, box_end in iter_boxes(buf, start, end):
        if found == kind:
            return payload, box_end
    raise SegmentError(f"{kind!r} box not found")


def read_at(fd: int, offset: int, size: int) -> bytes:
    """Exactly `size` bytes at `offset` (fewer only at the end of the file)."""
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def box_header_at(fd: int, offset: int, file_size: int) -> tuple[bytes, int, int] | None:
    """(type, header size, box size) of the top-level box at `offset`, None if incomplete."""
    if file_size - offset < 8:
        return None
    head = read_at(fd, offset, 16 if file_size - offset >= 16 else 8)
    size, kind = struct.unpack_from(">I4s", head)
    header = 8
    if size == 1:
        if len(head) < 16:
            return None
        (size,) = struct.unpack_from(">Q", head, 8)
        header = 16
    if size < header or offset + size > file_size:
        return None  # size 0 ("to the end") is a box still being written
    return kind, header, size


@dataclass(frozen=True)
class Track:
    """One track of a segment's header."""

    track_id: int
    timescale: int
    handler: bytes
    stsd: bytes
    trak: bytes
    default_duration: int
    default_size: int
    default_flags: int


@dataclass(frozen=True)
class Header:
    """The ftyp+moov of a segment."""

    ftyp: bytes
    moov: bytes
    movie_timescale: int
    duration: float  # seconds from mvhd; 0 when the writer left it empty
    tracks: dict[int, Track]
    body_offset: int

    @property
    def compat_key(self) -> tuple[tuple[int, int, bytes], ...]:
        """Equal for segments whose samples can follow each other in one stream."""
        return tuple((t.track_id, t.timescale, t.stsd) for t in self.tracks.values())


def _full_box_version(buf: bytes, payload: int) -> int:
    return buf[payload]


def parse_header(ftyp: bytes, moov: bytes, body_offset: int) -> Header:
    """A Header from the raw ftyp and moov boxes."""
    mvhd, _ = child(moov, 8, len(moov), b"mvhd")
    if _full_box_version(moov, mvhd) == 1:
        movie_timescale, movie_duration = struct.unpack_from(">IQ", moov, mvhd + 20)
    else:
        movie_timescale, movie_duration = struct.unpack_from(">II", moov, mvhd + 12)
    if movie_timescale == 0:
        raise SegmentError("mvhd timescale is zero")
    trex: dict[int, tuple[int, int, int]] = {}
    tracks: dict[int, Track] = {}
    for kind, payload, end in iter_boxes(moov, 8, len(moov)):
        if kind == b"mvex":
            for sub, sub_payload, sub_end in iter_boxes(moov, payload, end):
                if sub == b"trex" and sub_end - sub_payload >= 24:
                    tid, _, dur, size, flags = struct.unpack_from(">5I", moov, sub_payload + 4)
                    trex[tid] = (dur, size, flags)
    for kind, payload, end in iter_boxes(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        tkhd, _ = child(moov, payload, end, b"tkhd")
        track_id = struct.unpack_from(">I", moov, tkhd + (20 if moov[tkhd] == 1 else 12))[0]
        mdia, mdia_end = child(moov, payload, end, b"mdia")
        mdhd, _ = child(moov, mdia, mdia_end, b"mdhd")
        timescale = struct.unpack_from(">I", moov, mdhd + (20 if moov[mdhd] == 1 else 12))[0]
        hdlr, _ = child(moov, mdia, mdia_end, b"hdlr")
        handler = moov[hdlr + 8 : hdlr + 12]
        minf, minf_end = child(moov, mdia, mdia_end, b"minf")
        stbl, stbl_end = child(moov, minf, minf_end, b"stbl")
        stsd, stsd_end = child(moov, stbl, stbl_end, b"stsd")
        if timescale == 0:
            raise SegmentError("mdhd timescale is zero")
        dur, size, flags = trex.get(track_id, (0, 0, 0))
        tracks[track_id] = Track(
            track_id=track_id,
            timescale=timescale,
            handler=handler,
            stsd=moov[stsd - 8 : stsd_end],
            trak=moov[payload - 8 : end],
            default_duration=dur,
            default_size=size,
            default_flags=flags,
        )
    if not tracks:
        raise SegmentError("no tracks")
    return Header(
        ftyp=ftyp,
        moov=moov,
        movie_timescale=movie_timescale,
        duration=movie_duration / movie_timescale,
        tracks=tracks,
        body_offset=body_offset,
    )


def read_header(fd: int, file_size: int) -> Header:
    """The header of an open segment file; SegmentError if it has none."""
    first = box_header_at(fd, 0, file_size)
    if first is None or first[0] != b"ftyp":
        raise SegmentError("ftyp box not found")
    ftyp_size = first[2]
    second = box_header_at(fd, ftyp_size, file_size)
    if second is None or second[0] != b"moov":
        raise SegmentError("moov box not found")
    moov_size = second[2]
    if ftyp_size + moov_size > _MAX_HEADER:
        raise SegmentError("header too large")
    data = read_at(fd, 0, ftyp_size + moov_size)
    moov = data[ftyp_size:]
    if second[1] != 8:  # normalise a 64-bit moov header so offsets inside are fixed
        moov = struct.pack(">I4s", len(moov) - 8, b"moov") + moov[16:]
    try:
        return parse_header(data[:ftyp_size], moov, ftyp_size + moov_size)
    except (struct.error, IndexError) as exc:
        raise SegmentError("malformed header") from exc


@dataclass(slots=True)
class Run:
    """The samples of one trun: decode times in the track's timescale, data in the file."""

    track_id: int
    base_dts: int
    data_offset: int
    durations: list[int]
    sizes: list[int]
    flags: list[int]
    ctos: list[int]

    @property
    def end_dts(self) -> int:
        """Decode time just after the last sample."""
        return self.base_dts + sum(self.durations)

    @property
    def data_size(self) -> int:
        """Bytes of sample data, contiguous from data_offset."""
        return sum(self.sizes)


@dataclass(slots=True)
class Fragment:
    """One complete moof+mdat."""

    offset: int
    end: int
    runs: list[Run] = field(default_factory=list)


_TRUN_FIELDS = ((0x100, "I"), (0x200, "I"), (0x400, "I"), (0x800, "i"))


def parse_moof(
    moof: bytes, moof_offset: int, header: Header, mdat_start: int, mdat_end: int
) -> list[Run]:
    """The runs of a moof whose box starts at file offset `moof_offset`; SegmentError if bad."""
    runs: list[Run] = []
    try:
        for kind, payload, end in iter_boxes(moof, 8, len(moof)):
            if kind != b"traf":
                continue
            tfhd_at, tfhd_end = child(moof, payload, end, b"tfhd")
            tf_flags = int.from_bytes(moof[tfhd_at + 1 : tfhd_at + 4], "big")
            (track_id,) = struct.unpack_from(">I", moof, tfhd_at + 4)
            track = header.tracks.get(track_id)
            if track is None:
                raise SegmentError(f"unknown track {track_id}")
            pos = tfhd_at + 8
            base = moof_offset
            if tf_flags & 0x1:
                (base,) = struct.unpack_from(">Q", moof, pos)
                pos += 8
            if tf_flags & 0x2:
                pos += 4
            default_duration, default_size, default_flags = (
                track.default_duration,
                track.default_size,
                track.default_flags,
            )
            if tf_flags & 0x8:
                (default_duration,) = struct.unpack_from(">I", moof, pos)
                pos += 4
            if tf_flags & 0x10:
                (default_size,) = struct.unpack_from(">I", moof, pos)
                pos += 4
            if tf_flags & 0x20:
                (default_flags,) = struct.unpack_from(">I", moof, pos)
                pos += 4
            if pos > tfhd_end:
                raise SegmentError("tfhd too short")
            dts = 0
            try:
                tfdt_at, _ = child(moof, payload, end, b"tfdt")
                if moof[tfdt_at] == 1:
                    (dts,) = struct.unpack_from(">Q", moof, tfdt_at + 4)
                else:
                    (dts,) = struct.unpack_from(">I", moof, tfdt_at + 4)
            except SegmentError:
                pass
            next_offset = base
            for sub, trun_at, trun_end in iter_boxes(moof, payload, end):
                if sub != b"trun":
                    continue
                version = moof[trun_at]
                tr_flags = int.from_bytes(moof[trun_at + 1 : trun_at + 4], "big")
                (count,) = struct.unpack_from(">I", moof, trun_at + 4)
                pos = trun_at + 8
                data_offset = next_offset
                if tr_flags & 0x1:
                    (rel,) = struct.unpack_from(">i", moof, pos)
                    data_offset = base + rel
                    pos += 4
                first_flags = None
                if tr_flags & 0x4:
                    (first_flags,) = struct.unpack_from(">I", moof, pos)
                    pos += 4
                fmt = ">" + "".join(
                    ("i" if code == "i" and version >= 1 else "I")
                    for bit, code in _TRUN_FIELDS
                    if tr_flags & bit
                )
                width = 4 * (len(fmt) - 1)
                if width and pos + width * count > trun_end:
                    raise SegmentError("trun too short")
                if width:
                    columns = list(
                        zip(*struct.iter_unpack(fmt, moof[pos : pos + width * count]), strict=True)
                    )
                else:
                    columns = []
                col = iter(columns)
                durations = list(next(col)) if tr_flags & 0x100 else [default_duration] * count
                sizes = list(next(col)) if tr_flags & 0x200 else [default_size] * count
                flags = list(next(col)) if tr_flags & 0x400 else [default_flags] * count
                ctos = list(next(col)) if tr_flags & 0x800 else [0] * count
                if count == 0:
                    durations, sizes, flags, ctos = [], [], [], []
                if first_flags is not None and count:
                    flags[0] = first_flags
                run = Run(track_id, dts, data_offset, durations, sizes, flags, ctos)
                size = run.data_size
                if data_offset < mdat_start or data_offset + size > mdat_end:
                    raise SegmentError("trun data outside its mdat")
                next_offset = data_offset + size
                dts = run.end_dts
                if count:
                    runs.append(run)
    except struct.error as exc:
        raise SegmentError("malformed moof") from exc
    return runs


def iter_fragments(fd: int, file_size: int, header: Header, origin: str) -> Iterator[Fragment]:
    """Each complete moof+mdat after the header, stopping quietly at an incomplete tail.

    A damaged fragment ends the segment there: what came before it is still served, and it
    is logged. A tail cut short (the file is still being written) is simply not read.
    """
    pos = header.body_offset
    while True:
        box = box_header_at(fd, pos, file_size)
        if box is None:
            return
        kind, _, size = box
        if kind != b"moof":
            if kind in (b"mfra", b"free", b"skip", b"udta", b"sidx", b"styp", b"prft", b"emsg"):
                pos += size
                continue
            if kind != b"mdat":
                log.warning("segment %s: unexpected %r box, rest of it skipped", origin, kind)
            return
        if size > _MAX_MOOF:
            log.warning("segment %s: oversized moof, rest of it skipped", origin)
            return
        mdat = box_header_at(fd, pos + size, file_size)
        if mdat is None:
            return  # the fragment's mdat is not complete yet
        if mdat[0] != b"mdat":
            log.warning("segment %s: moof without mdat, rest of it skipped", origin)
            return
        mdat_start = pos + size + mdat[1]
        mdat_end = pos + size + mdat[2]
        moof = read_at(fd, pos, size)
        if size >= 16 and struct.unpack_from(">I", moof)[0] == 1:
            moof = struct.pack(">I4s", size - 8, b"moof") + moof[16:]  # fixed offsets inside
        try:
            runs = parse_moof(moof, pos, header, mdat_start, mdat_end)
        except SegmentError as exc:
            log.warning("segment %s: damaged fragment (%s), rest of it skipped", origin, exc)
            return
        yield Fragment(pos, mdat_end, runs)
        pos = mdat_end


def last_fragment_end(fd: int, file_size: int, header: Header) -> int | None:
    """File offset of the last complete moof, hopping only over box headers."""
    pos = header.body_offset
    last = None
    while True:
        box = box_header_at(fd, pos, file_size)
        if box is None or box[0] != b"moof":
            return last
        mdat = box_header_at(fd, pos + box[2], file_size)
        if mdat is None or mdat[0] != b"mdat":
            return last
        last = pos
        pos += box[2] + mdat[2]


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


def _segment_duration(fd: int, file_size: int, header: Header, origin: str) -> float:
    if header.duration > 0:
        return header.duration
    last = last_fragment_end(fd, file_size, header)
    if last is None:
        return 0.0
    box = box_header_at(fd, last, file_size)
    mdat = box_header_at(fd, last + box[2], file_size) if box else None
    if box is None or mdat is None:
        return 0.0
    moof = read_at(fd, last, box[2])
    mdat_start = last + box[2] + mdat[1]
    try:
        runs = parse_moof(moof, last, header, mdat_start, last + box[2] + mdat[2])
    except SegmentError as exc:
        log.warning("segment %s: damaged last fragment (%s)", origin, exc)
        return 0.0
    ends = [run.end_dts / header.tracks[run.track_id].timescale for run in runs]
    return max(ends, default=0.0)


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
            duration = _segment_duration(fd, stat.st_size, header, segment.path.name)
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
