"""Joining the fragmented MP4s of several /get answers into one file, as they stream in.

MediaMTX's /get stops at the first gap, so an archive over a range with gaps is fetched as
one /get (format fmp4) per recorded span. Their bytes are turned into one fragmented MP4
while they arrive: the first piece's ftyp+moov (its length set to the whole archive's, as
the embedded muxer does), then every piece's moof+mdat with its decode times moved so that
each piece starts where the previous one ended (gaps skipped, time continuous) and its
fragments renumbered. Sample data is passed through untouched, and only one box header or
moof is held at a time, so memory stays bounded whatever the archive's length.

A piece recorded with other H.264 settings (another picture size, say) follows in the same
track with its parameter sets carried in-band: when the fetcher, which reads every piece's
header first, finds that the pieces' settings differ, the SPS and PPS of each piece are put
before each of its keyframes (sizes, data offsets and the mdat's length grown to match), so
a decoder switches at the first frame and again after any seek. A piece with other tracks or
another codec cannot share the file's tracks: it is left out, before a byte is written, and
the archive's spans say so by not listing it. Pure and non-blocking: the fetcher feeds it
chunks on the event loop.
"""

from __future__ import annotations

import logging
import math
import struct

from vms.mediaserver.mp4read import (
    SAMPLE_IS_NON_SYNC,
    Header,
    Run,
    SegmentError,
    child,
    iter_boxes,
    parse_header,
)
from vms.mediaserver.mp4read import parse_moof as _parse_moof
from vms.mediaserver.remux.fmp4 import fmp4_moov

log = logging.getLogger(__name__)

_MAX_HEADER = 8 << 20
_MAX_MOOF = 16 << 20
_BASE_DATA_OFFSET = 0x1


class JoinError(Exception):
    """A piece is not a fragmented MP4 that can be joined (or was cut short: `retryable`)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class FragmentJoiner:
    """Feeds pieces in order; hands back the bytes of the one joined file."""

    def __init__(self, expected_seconds: float, *, in_band: bool = False) -> None:
        """`in_band`: the pieces' H.264 settings differ (read from their headers first), so
        every keyframe carries its piece's parameter sets in-band (see parameter_sets)."""
        self._expected = expected_seconds
        self._in_band = in_band
        self._first: Header | None = None
        self._sequence = 0
        self._ends: dict[int, int] = {}  # per track: output decode time after its last sample
        self._start_piece_state()

    def _start_piece_state(self) -> None:
        self._buffer = bytearray()
        self._ftyp: bytes | None = None
        self._header: Header | None = None
        self._skipping = False
        self._pass_left = 0  # bytes of the current box body still to pass (or drop)
        self._pass_out = False
        self._to_end = False  # a box of size 0: it runs to the end of the piece
        self._first_dts: dict[int, int] = {}
        self._base: dict[int, int] = {}
        self._piece_ends: dict[int, int] = {}
        self._prefix = b""  # the piece's SPS and PPS, put before each of its keyframes
        self._inserts: list[int] = []  # where, counted from the current moof's start
        self._moof_size = 0
        self._body: list[int] = []  # the same, counted in the current mdat's body
        self._body_at = 0

    @property
    def header(self) -> Header | None:
        """The current piece's ftyp+moov, once it has arrived."""
        return self._header

    @property
    def written_seconds(self) -> float:
        """Seconds of footage handed out so far (for progress)."""
        ends = {**self._ends, **self._piece_ends}
        if self._first is None or not ends:
            return 0.0
        return max(end / self._first.tracks[tid].timescale for tid, end in ends.items())

    def start_piece(self) -> None:
        """A new /get answer begins."""
        self._start_piece_state()

    def feed(self, data: bytes) -> list[bytes]:
        """The output bytes that `data` (the next bytes of the current piece) makes ready."""
        out: list[bytes] = []
        buffer = self._buffer
        buffer += data
        while buffer:
            if self._to_end or self._pass_left:
                take = len(buffer) if self._to_end else min(len(buffer), self._pass_left)
                if self._pass_out:
                    out.extend(self._with_prefixes(bytes(buffer[:take])))
                del buffer[:take]
                if not self._to_end:
                    self._pass_left -= take
                continue
            if len(buffer) < 16 and (len(buffer) < 8 or buffer[:4] == b"\0\0\0\1"):
                break
            size, kind = struct.unpack_from(">I4s", buffer)
            header_size = 8
            if size == 1:
                (size,) = struct.unpack_from(">Q", buffer, 8)
                header_size = 16
            elif size != 0 and size < 8:
                raise JoinError("The media server sent a broken MP4 box")
            if kind == b"mdat" or kind not in (b"ftyp", b"moov", b"moof"):
                self._pass_through(kind, size, header_size, out)
                continue
            limit = _MAX_MOOF if kind == b"moof" else _MAX_HEADER
            if size == 0 or size > limit:
                raise JoinError(f"The media server sent an oversized {kind.decode()} box")
            if len(buffer) < size:
                break
            whole = bytes(buffer[:size])
            del buffer[:size]
            if header_size == 16:
                if kind == b"moof":  # its data offsets count from its start: keep it as sent
                    raise JoinError("The media server sent a fragment with a 64-bit header")
                # normalise a 64-bit header so offsets inside are fixed
                whole = struct.pack(">I4s", size - 8, kind) + whole[16:]
            out.extend(self._box(kind, whole))
        return out

    def _pass_through(self, kind: bytes, size: int, header_size: int, out: list[bytes]) -> None:
        """Pass an mdat of a joined piece on as it comes; drop any other box the same way."""
        keep = kind == b"mdat" and not self._skipping and self._header is not None
        head = bytes(self._buffer[:header_size])
        del self._buffer[:header_size]
        if keep:
            if size == 0:  # "to the end": give it a length the next piece cannot break
                raise JoinError("The media server sent an mdat of unknown length")
            start = self._moof_size + header_size
            self._body = [at - start for at in self._inserts]
            self._inserts, self._body_at = [], 0
            if self._body:
                grown = size + len(self._body) * len(self._prefix)
                if header_size == 8 and grown > 0xFFFFFFFF:
                    raise JoinError("The media server sent a fragment too large to carry")
                head = (
                    struct.pack(">I4s", grown, b"mdat")
                    if header_size == 8
                    else struct.pack(">I4sQ", 1, b"mdat", grown)
                )
            out.append(head)
        self._pass_out = keep
        self._to_end = size == 0
        self._pass_left = size - header_size

    def _with_prefixes(self, data: bytes) -> list[bytes]:
        """An mdat body's next bytes, with the parameter sets put before each keyframe."""
        if not self._body:
            self._body_at += len(data)
            return [data]
        out = []
        position = 0
        while self._body and self._body[0] < self._body_at + len(data):
            cut = self._body.pop(0) - self._body_at
            out += [data[position:cut], self._prefix]
            position = cut
        out.append(data[position:])
        self._body_at += len(data)
        return out

    def _box(self, kind: bytes, whole: bytes) -> list[bytes]:
        if kind == b"ftyp":
            self._ftyp = whole
            return []
        if kind == b"moov":
            return self._moov(whole)
        if self._header is None:
            raise JoinError("The media server sent a fragment before the movie header")
        if self._skipping:
            return []
        return [self._moof(whole)]

    def _moov(self, moov: bytes) -> list[bytes]:
        if self._ftyp is None:
            raise JoinError("The media server sent no ftyp box")
        try:
            header = parse_header(self._ftyp, moov, 0)
            child(moov, 8, len(moov), b"mvex")
        except (SegmentError, struct.error, IndexError):
            raise JoinError("The media server sent a video that is not fragmented MP4") from None
        self._header = header
        if self._in_band:
            self._prefix = parameter_sets(header) or b""
        if self._first is None:
            self._first = header
            return [self._ftyp + fmp4_moov(header, self._expected)]
        if not joinable(self._first, header, in_band=self._in_band):
            log.warning("a recorded span has another stream than the first; left out")
            self._skipping = True
            return []
        seconds = max(
            (end / self._first.tracks[tid].timescale for tid, end in self._ends.items()),
            default=0.0,
        )
        self._base = {
            tid: math.ceil(seconds * track.timescale) for tid, track in header.tracks.items()
        }
        return []

    def _moof(self, moof: bytes) -> bytes:
        header = self._header
        assert header is not None
        data = bytearray(moof)
        self._moof_size = len(moof)
        try:
            runs = _parse_moof(moof, 0, header, len(moof) + 8, 1 << 62)
            ends: dict[int, int] = {}
            for run in runs:
                ends[run.track_id] = max(ends.get(run.track_id, 0), run.end_dts)
            for kind, payload, end in iter_boxes(moof, 8, len(moof)):
                if kind == b"mfhd":
                    self._sequence += 1
                    struct.pack_into(">I", data, payload + 4, self._sequence)
                elif kind == b"traf":
                    self._retime(data, moof, payload, end, ends)
            if self._prefix:
                self._inserts = _carry_prefix(data, moof, header, runs, len(self._prefix))
        except (SegmentError, struct.error, IndexError):
            raise JoinError("The media server sent a broken fragment") from None
        return bytes(data)

    def _retime(
        self, data: bytearray, moof: bytes, payload: int, end: int, ends: dict[int, int]
    ) -> None:
        """Move one traf's decode time so the piece follows the previous one."""
        tfhd, _ = child(moof, payload, end, b"tfhd")
        if int.from_bytes(moof[tfhd + 1 : tfhd + 4], "big") & _BASE_DATA_OFFSET:
            raise JoinError("The media server sent fragments with absolute data offsets")
        (track_id,) = struct.unpack_from(">I", moof, tfhd + 4)
        tfdt, _ = child(moof, payload, end, b"tfdt")
        wide = moof[tfdt] == 1
        (dts,) = struct.unpack_from(">Q" if wide else ">I", moof, tfdt + 4)
        first = self._first_dts.setdefault(track_id, dts)
        base = self._base.get(track_id, 0)
        moved = base + dts - first
        if moved < 0 or (not wide and moved > 0xFFFFFFFF):
            raise JoinError("The media server sent fragments that go back in time")
        struct.pack_into(">Q" if wide else ">I", data, tfdt + 4, moved)
        if track_id in ends:
            self._piece_ends[track_id] = max(
                self._piece_ends.get(track_id, 0), base + ends[track_id] - first
            )

    def end_piece(self) -> float:
        """The current piece is over: the seconds of footage it added (0 if left out)."""
        if self._buffer or self._pass_left:
            raise JoinError("The media server sent an incomplete video", retryable=True)
        if self._header is None and self._ftyp is None:
            return 0.0
        if self._header is None:
            raise JoinError("The media server sent no movie header")
        before = self.written_seconds_of(self._ends)
        self._ends.update(self._piece_ends)
        added = self.written_seconds_of(self._ends) - before
        self._start_piece_state()
        return max(0.0, added)

    def written_seconds_of(self, ends: dict[int, int]) -> float:
        """Seconds up to the latest track end in `ends`, video first if there is video."""
        if self._first is None or not ends:
            return 0.0
        tracks = self._first.tracks
        video = [tid for tid in ends if tracks[tid].handler == b"vide"]
        chosen = video or list(ends)
        return max(ends[tid] / tracks[tid].timescale for tid in chosen)


def _avcc(stsd: bytes) -> bytes | None:
    """The avcC of an stsd whose one sample entry is H.264 (avc1 or avc3); None otherwise."""
    if len(stsd) < 24 or int.from_bytes(stsd[12:16], "big") != 1:
        return None
    entry_size, entry_type = struct.unpack_from(">I4s", stsd, 16)
    if entry_type not in (b"avc1", b"avc3") or 16 + entry_size > len(stsd):
        return None
    try:
        at, end = child(stsd, 16 + 8 + 78, 16 + entry_size, b"avcC")
    except SegmentError:
        return None
    return stsd[at:end]


def _video(header: Header) -> int | None:
    return next((tid for tid, t in header.tracks.items() if t.handler == b"vide"), None)


def parameter_sets(header: Header) -> bytes | None:
    """The SPS and PPS of the header's H.264 track as NAL units in sample form, or None."""
    video = _video(header)
    avcc = _avcc(header.tracks[video].stsd) if video is not None else None
    if avcc is None or len(avcc) < 7:
        return None
    length_size = (avcc[4] & 0x3) + 1
    units = []
    position = 5
    for mask in (0x1F, 0xFF):  # first the SPS count (5 bits), then the PPS count
        count = avcc[position] & mask
        position += 1
        for _ in range(count):
            size = int.from_bytes(avcc[position : position + 2], "big")
            units.append(avcc[position + 2 : position + 2 + size])
            position += 2 + size
    if position > len(avcc) or not units:
        return None
    return b"".join(len(u).to_bytes(length_size, "big") + u for u in units)


def joinable(first: Header, other: Header, *, in_band: bool) -> bool:
    """Whether `other`'s samples can follow `first`'s in the same tracks.

    With parameter sets carried in-band, the H.264 settings may differ (another picture
    size); the tracks, their timescales, the NAL length size and any other track may not.
    """
    if other.compat_key == first.compat_key:
        return True
    if not in_band:
        return False
    if tuple((t.track_id, t.timescale, t.handler) for t in first.tracks.values()) != tuple(
        (t.track_id, t.timescale, t.handler) for t in other.tracks.values()
    ):
        return False
    video = _video(first)
    for tid, track in first.tracks.items():
        if tid != video and track.stsd != other.tracks[tid].stsd:
            return False
    if video is None:
        return False
    mine, theirs = _avcc(first.tracks[video].stsd), _avcc(other.tracks[video].stsd)
    return mine is not None and theirs is not None and (mine[4] & 3) == (theirs[4] & 3)


def _carry_prefix(
    data: bytearray, moof: bytes, header: Header, runs: list[Run], size: int
) -> list[int]:
    """Grow each video keyframe by `size` bytes in the moof (sizes and data offsets);
    where the bytes go, counted from the moof's start."""
    video = _video(header)
    inserts: list[int] = []
    for run in runs:
        if run.track_id != video:
            continue
        at = run.data_offset
        for sample_size, flags in zip(run.sizes, run.flags, strict=True):
            if not flags & SAMPLE_IS_NON_SYNC:
                inserts.append(at)
            at += sample_size
    if not inserts:
        return []
    truns = [
        (payload, end)
        for kind, tpayload, tend in iter_boxes(moof, 8, len(moof))
        if kind == b"traf"
        for sub, payload, end in iter_boxes(moof, tpayload, tend)
        if sub == b"trun" and struct.unpack_from(">I", moof, payload + 4)[0]
    ]
    for (payload, _), run in zip(truns, runs, strict=True):
        flags = int.from_bytes(moof[payload + 1 : payload + 4], "big")
        if not flags & 0x1 or (run.track_id == video and not flags & 0x200):
            raise JoinError("The media server sent fragments whose stream cannot change")
        before = sum(size for at in inserts if at < run.data_offset)
        (offset,) = struct.unpack_from(">i", moof, payload + 8)
        struct.pack_into(">i", data, payload + 8, offset + before)
        if run.track_id != video:
            continue
        position = payload + 12 + (4 if flags & 0x4 else 0)
        width = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
        size_at = position + (4 if flags & 0x100 else 0)
        for index, (sample_size, sample_flags) in enumerate(zip(run.sizes, run.flags, strict=True)):
            if not sample_flags & SAMPLE_IS_NON_SYNC:
                struct.pack_into(">I", data, size_at + index * width, sample_size + size)
    return inserts
