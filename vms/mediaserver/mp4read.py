"""Reading segment files as fragmented MP4: box headers, the ftyp+moov, fragments, durations.

MediaMTX (since December 2025) stores an `mtxi` box in `moov/udta`: the recording's stream
id, the segment's number in that stream, the DTS of its first sample and its NTP time. It is
read into `Header.mtxi`; `recordings` joins segments by it and places them by its DTS. Files
without it (older MediaMTX, other muxers) are joined by the 1 s rule. A sample's decode time is
its fragment's `tfdt` plus the durations before it, in its track's timescale; callers add that
to the segment's place in time, as MediaMTX does.

A segment's duration is read cheaply: `mvhd.duration` when the writer filled it in (MediaMTX
does when it closes a segment), otherwise by hopping over box headers to the last complete
moof+mdat and adding up that fragment's sample durations. A segment still being written is
cut at its last complete moof+mdat; anything after it is never read.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SAMPLE_IS_NON_SYNC = 0x10000

_MAX_HEADER = 4 * 1024 * 1024
_MAX_MOOF = 16 * 1024 * 1024


class SegmentError(Exception):
    """A segment file is not a readable fragmented MP4."""


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


@dataclass(frozen=True, slots=True)
class Mtxi:
    """MediaMTX's segment info box: which stream a segment belongs to and where it sits in it."""

    stream_id: bytes  # 16 bytes (a UUID)
    number: int  # the segment's number in its stream; the next one is number + 1
    dts: int  # nanoseconds: the stream's decode time of the segment's first sample
    ntp: int  # nanoseconds since the Unix epoch: the wall-clock time of that sample

    def to_box(self) -> bytes:
        """The `mtxi` box (a version 0 full box), as MediaMTX's recorder writes it."""
        payload = struct.pack(">I16sQqq", 0, self.stream_id, self.number, self.dts, self.ntp)
        return struct.pack(">I4s", 8 + len(payload), MTXI) + payload


MTXI = b"mtxi"
_MTXI_SIZE = 4 + 16 + 8 + 8 + 8


def parse_mtxi(buf: bytes, payload: int, end: int) -> Mtxi | None:
    """The mtxi box whose payload is buf[payload:end]; None if it is not one we can read."""
    if end - payload < _MTXI_SIZE or buf[payload] != 0:
        return None
    stream_id, number, dts, ntp = struct.unpack_from(">16sQqq", buf, payload + 4)
    return Mtxi(stream_id, number, dts, ntp)


@dataclass(frozen=True)
class Header:
    """The ftyp+moov of a segment."""

    ftyp: bytes
    moov: bytes
    movie_timescale: int
    duration: float  # seconds from mvhd; 0 when the writer left it empty
    tracks: dict[int, Track]
    body_offset: int
    mtxi: Mtxi | None = None

    @property
    def compat_key(self) -> tuple[tuple[int, int, bytes], ...]:
        """Equal for segments whose samples can follow each other in one stream."""
        return tuple((t.track_id, t.timescale, t.stsd) for t in self.tracks.values())

    @property
    def join_key(self) -> tuple[tuple[int, int, bytes], ...]:
        """Equal for segments MediaMTX's 1 s rule may join: track ids, timescales, codecs.

        MediaMTX compares the codec's type only (segmentFMP4TracksAreEqual), not its
        parameters: the sample entry's four-character code stands for it here.
        """
        return tuple((t.track_id, t.timescale, t.stsd[20:24]) for t in self.tracks.values())


def parse_header(ftyp: bytes, moov: bytes, body_offset: int) -> Header:
    """A Header from the raw ftyp and moov boxes."""
    mvhd, _ = child(moov, 8, len(moov), b"mvhd")
    if moov[mvhd] == 1:
        movie_timescale, movie_duration = struct.unpack_from(">IQ", moov, mvhd + 20)
    else:
        movie_timescale, movie_duration = struct.unpack_from(">II", moov, mvhd + 12)
    if movie_timescale == 0:
        raise SegmentError("mvhd timescale is zero")
    trex: dict[int, tuple[int, int, int]] = {}
    tracks: dict[int, Track] = {}
    mtxi: Mtxi | None = None
    for kind, payload, end in iter_boxes(moov, 8, len(moov)):
        if kind == b"udta":
            for sub, sub_payload, sub_end in iter_boxes(moov, payload, end):
                if sub == MTXI and mtxi is None:
                    mtxi = parse_mtxi(moov, sub_payload, sub_end)
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
        mtxi=mtxi,
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
            defaults = [track.default_duration, track.default_size, track.default_flags]
            for i, bit in enumerate((0x8, 0x10, 0x20)):
                if tf_flags & bit:
                    (defaults[i],) = struct.unpack_from(">I", moof, pos)
                    pos += 4
            default_duration, default_size, default_flags = defaults
            if pos > tfhd_end:
                raise SegmentError("tfhd too short")
            dts = 0
            try:
                tfdt_at, _ = child(moof, payload, end, b"tfdt")
                (dts,) = struct.unpack_from(">Q" if moof[tfdt_at] == 1 else ">I", moof, tfdt_at + 4)
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
                rows = struct.iter_unpack(fmt, moof[pos : pos + width * count]) if width else []
                col = zip(*rows, strict=True)
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


def segment_duration(fd: int, file_size: int, header: Header, origin: str) -> float:
    """Seconds of footage in an open segment file: mvhd's, else up to its last complete fragment."""
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
