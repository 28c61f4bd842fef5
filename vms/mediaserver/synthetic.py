"""Synthetic H.264 recordings in MediaMTX's layout, with the time burnt into every frame.

Every frame shows the camera name and the UTC wall-clock time it stands for, as digits for a
person and as a stripe of large black/white blocks for a program (see docs/STRIPE.md).
Segment files are named by the local time of their first frame, as MediaMTX names them. Like
MediaMTX's recorder, a writer can put an `mtxi` box (stream id, segment number, DTS, NTP) in
each segment's header, and fills in the mvhd duration when it closes a segment.

One cohesive thing, kept whole: the stripe is written and read back by the same code, so the
two can never disagree (tests decode what the demo recorder encoded).
"""

from __future__ import annotations

import logging
import math
import os
import struct
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from vms.dates import as_utc
from vms.mediaserver.mp4read import Mtxi
from vms.mediaserver.recordings import segment_name

log = logging.getLogger(__name__)

MOVFLAGS: Final = "frag_keyframe+empty_moov+default_base_moof"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# The stripe, exactly as docs/STRIPE.md describes it.
STRIPE_CELLS: Final = 64
STRIPE_MARKER: Final = 0xB2
STRIPE_TIME_BITS: Final = 48
STRIPE_BLACK: Final = 16
STRIPE_WHITE: Final = 235
MIN_CONTRAST: Final = 48.0

MIN_SIZE: Final = (128, 96)
TIME_CHARS: Final = "0123456789-:. "

Luma = npt.NDArray[np.uint8]


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since the Unix epoch (truncated), for a UTC or naive-UTC datetime."""
    return (as_utc(moment) - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    """The UTC datetime `ms` milliseconds after the Unix epoch."""
    return EPOCH + timedelta(milliseconds=ms)


def crc8(data: bytes) -> int:
    """CRC-8 with polynomial 0x07, initial value 0, no reflection, no final xor."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_stripe(moment: datetime) -> list[int]:
    """The stripe's 64 bits for `moment`, left to right: marker, epoch ms, CRC-8 (1 = white)."""
    ms = epoch_ms(moment)
    if not 0 <= ms < 1 << STRIPE_TIME_BITS:
        raise ValueError("time out of the stripe's range")
    payload = ms.to_bytes(STRIPE_TIME_BITS // 8, "big")
    word = (STRIPE_MARKER << 56) | (ms << 8) | crc8(payload)
    return [(word >> (STRIPE_CELLS - 1 - i)) & 1 for i in range(STRIPE_CELLS)]


def stripe_height(height: int) -> int:
    """Height in rows of the stripe band at the bottom of a frame `height` rows high."""
    return max(4, height // 12)


def cell_edges(width: int) -> list[int]:
    """Left edges of the 64 cells across `width` columns, plus the right edge of the last."""
    return [i * width // STRIPE_CELLS for i in range(STRIPE_CELLS + 1)]


def paint_stripe(luma: Luma, bits: list[int]) -> None:
    """Paint `bits` as the stripe into the bottom band of a luma plane, in place."""
    height, width = luma.shape
    edges = cell_edges(width)
    row = np.empty(width, dtype=np.uint8)
    for i, bit in enumerate(bits):
        row[edges[i] : edges[i + 1]] = STRIPE_WHITE if bit else STRIPE_BLACK
    luma[height - stripe_height(height) :, :] = row


def decode_stripe_luma(luma: npt.NDArray[Any]) -> datetime:
    """Read the stripe from a luma (grey) plane; ValueError if no valid stripe is there."""
    height, width = luma.shape
    if width < STRIPE_CELLS or height < 16:
        raise ValueError("frame too small to hold a stripe")
    band = stripe_height(height)
    # Sample the middle half of the band and of every cell, away from ringing at the edges.
    top = height - band + band // 4
    bottom = max(top + 1, height - band // 4)
    rows = luma[top:bottom].astype(np.float32).mean(axis=0)
    edges = cell_edges(width)
    levels = []
    for i in range(STRIPE_CELLS):
        left, right = edges[i], edges[i + 1]
        inset = (right - left) // 4
        levels.append(float(rows[left + inset : max(left + inset + 1, right - inset)].mean()))
    marker = [(STRIPE_MARKER >> (7 - i)) & 1 for i in range(8)]
    white = [lv for lv, bit in zip(levels[:8], marker, strict=True) if bit]
    black = [lv for lv, bit in zip(levels[:8], marker, strict=True) if not bit]
    low, high = max(black), min(white)
    if high - low < MIN_CONTRAST:
        raise ValueError("no stripe marker found")
    threshold = (sum(white) / len(white) + sum(black) / len(black)) / 2
    word = 0
    for level in levels:
        word = (word << 1) | (level > threshold)
    ms = (word >> 8) & ((1 << STRIPE_TIME_BITS) - 1)
    if word >> 56 != STRIPE_MARKER:
        raise ValueError("no stripe marker found")
    if crc8(ms.to_bytes(STRIPE_TIME_BITS // 8, "big")) != word & 0xFF:
        raise ValueError("stripe checksum mismatch")
    return from_epoch_ms(ms)


def decode_stripe(frame: av.VideoFrame) -> datetime:
    """The UTC time (millisecond precision) a frame's stripe encodes; ValueError if unreadable."""
    luma = frame.to_ndarray(format="gray")
    return decode_stripe_luma(luma)


def format_time(moment: datetime) -> str:
    """The readable time shown on a frame, e.g. '2026-11-23 10:20:05.400' (UTC, ms truncated)."""
    utc = as_utc(moment)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType; scalable fonts are needed")
    return font


class FrameRenderer:
    """Draws frames for one camera: the static picture once, then only time digits and stripe."""

    def __init__(self, name: str, size: tuple[int, int] = (640, 360)) -> None:
        width, height = size
        if width < MIN_SIZE[0] or height < MIN_SIZE[1] or width % 2 or height % 2:
            raise ValueError(f"frame size must be even and at least {MIN_SIZE}: {size}")
        self.name = name
        self.size = size
        band = stripe_height(height)
        time_size = max(6, min(height // 10, width // 15))
        time_font = _font(time_size)
        name_font = _font(max(6, height // 9))
        small_font = _font(max(5, time_size * 2 // 5))

        # One tile per character: digits share one width and the time's format is fixed, so the
        # characters never shift as the time changes and a frame is a few array copies.
        ascent, descent = time_font.getmetrics()
        digit_w = math.ceil(max(time_font.getlength(ch) for ch in "0123456789")) + time_size // 18
        self._cell_h = ascent + descent
        self._tiles: dict[str, Luma] = {}
        for ch in TIME_CHARS:
            tile_w = (
                digit_w if ch.isdigit() else math.ceil(time_font.getlength(ch)) + time_size // 9
            )
            tile = Image.new("L", (tile_w, self._cell_h), 0)
            ImageDraw.Draw(tile).text((tile_w / 2, 0), ch, fill=255, font=time_font, anchor="ma")
            mask = np.asarray(tile, dtype=np.float32) / 255.0
            self._tiles[ch] = (STRIPE_BLACK + mask * (STRIPE_WHITE - STRIPE_BLACK)).astype(np.uint8)
        text_w = sum(self._tiles[ch].shape[1] for ch in format_time(EPOCH))
        self._text_w = text_w
        label_w = math.ceil(small_font.getlength(" UTC")) + 2
        if text_w + label_w + 8 > width:
            raise ValueError(f"frame too narrow for the time: {size}")

        # The static picture: a gradient tinted per camera, the name, and black boxes (neutral
        # chroma) under the time and the stripe.
        tint = np.array([crc8(name.encode()) % 64 + 32, 48, 96 - crc8(name[::-1].encode()) % 48])
        ramp = np.linspace(0.6, 1.4, width, dtype=np.float32)[None, :, None]
        rgb = np.clip(tint[None, None, :] * ramp * np.ones((height, 1, 1)), 0, 255)
        image = Image.fromarray(rgb.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        margin = max(4, height // 40)
        draw.text((margin, margin), name, fill=(255, 255, 255), font=name_font)
        self._text_x = (width - text_w - label_w) // 2
        self._text_y = height - band - margin - self._cell_h
        draw.rectangle(
            (
                self._text_x - margin,
                self._text_y - margin,
                self._text_x + text_w + label_w + margin - 1,
                self._text_y + self._cell_h + margin - 1,
            ),
            fill=(0, 0, 0),
        )
        draw.text(
            (self._text_x + text_w + label_w, self._text_y + ascent),
            "UTC",
            fill=(220, 220, 220),
            font=small_font,
            anchor="rs",
        )
        draw.rectangle((0, height - band, width - 1, height - 1), fill=(0, 0, 0))
        base = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
        self._yuv: Luma = np.asarray(base.reformat(format="yuv420p").to_ndarray(), np.uint8)
        self._luma: Luma = self._yuv[:height]

    def render(self, moment: datetime) -> av.VideoFrame:
        """A yuv420p frame showing `moment` (UTC) as digits and as the stripe."""
        text = format_time(moment)
        x, y = self._text_x, self._text_y
        self._luma[y : y + self._cell_h, x : x + self._text_w] = np.hstack(
            [self._tiles[ch] for ch in text]
        )
        paint_stripe(self._luma, encode_stripe(moment))
        return av.VideoFrame.from_ndarray(self._yuv, format="yuv420p")


def trim_partial_tail(path: Path) -> int:
    """Cut a segment back to its last whole fragment (after a crash); return bytes removed.

    A file ends cleanly after a whole box that is not a moof: a moof is only useful with
    the mdat that follows it.
    """
    with path.open("r+b") as file:
        total = file.seek(0, os.SEEK_END)
        offset = keep = 0
        while offset + 8 <= total:
            file.seek(offset)
            header = file.read(16)
            size, kind = struct.unpack_from(">I4s", header)
            if size == 1 and len(header) == 16:
                (size,) = struct.unpack_from(">Q", header, 8)
            if size < 8 or offset + size > total:
                break
            offset += size
            if kind not in (b"moof", b"ftyp"):
                keep = offset
        if keep < total:
            file.truncate(keep)
    return total - keep


class FragmentSink:
    """A write-only file that reaches the disk only in whole top-level MP4 boxes.

    The muxer writes through a small buffer, so a moof+mdat pair could land on disk in pieces;
    holding bytes back until a box (and, for a moof, its mdat) is complete means a reader of the
    growing file sees the header and whole fragments only. The file is created with its first
    whole boxes, so no empty segment file is ever seen either.
    """

    def __init__(self, path: Path, mtxi: Mtxi | None = None) -> None:
        self.path = path
        self.mtxi = mtxi
        self.mvhd_at: int | None = None  # file offset of the mvhd box, once written
        self._written = 0
        self._moov_seen = False
        self._fd: int | None = None
        self._closed = False
        self._pending = bytearray()
        self._parsed = 0  # bytes of _pending already split into complete boxes
        self._flushable = 0  # bytes of _pending ready to be written

    def writable(self) -> bool:
        """Tell PyAV this is an output file."""
        return True

    def write(self, data: bytes) -> int:
        """Take muxer output; write out whatever completes a box that may be shown."""
        self._pending += data
        while len(self._pending) - self._parsed >= 8:
            size, kind = struct.unpack_from(">I4s", self._pending, self._parsed)
            if size == 1:
                if len(self._pending) - self._parsed < 16:
                    break
                (size,) = struct.unpack_from(">Q", self._pending, self._parsed + 8)
            if size < 8 or len(self._pending) - self._parsed < size:
                break
            if kind == b"moov" and not self._moov_seen:
                self._moov_seen = True
                size = self._patch_moov(self._parsed, size)
            self._parsed += size
            if kind != b"moof" and kind != b"ftyp":
                self._flushable = self._parsed
        if self._flushable:
            self._write_out(self._flushable)
        return len(data)

    def _patch_moov(self, at: int, size: int) -> int:
        """Add the mtxi box to the moov at _pending[at:at+size] (in its udta); the new size."""
        moov = bytes(self._pending[at : at + size])
        if moov[:4] == b"\x00\x00\x00\x01":
            return size  # 64-bit header: never written by the mp4 muxer for a header
        pos = 8
        udta: tuple[int, int] | None = None
        while pos + 8 <= len(moov):
            box_size, kind = struct.unpack_from(">I4s", moov, pos)
            if box_size < 8:
                break
            if kind == b"mvhd":
                self.mvhd_at = self._written + at + pos
            elif kind == b"udta":
                udta = (pos, box_size)
            pos += box_size
        if self.mtxi is None:
            return size
        box = self.mtxi.to_box()
        if udta is None:
            new = moov + struct.pack(">I4s", 8 + len(box), b"udta") + box
        else:
            upos, usize = udta
            grown = struct.pack(">I", usize + len(box)) + moov[upos + 4 : upos + usize] + box
            new = moov[:upos] + grown + moov[upos + usize :]
        new = struct.pack(">I", len(new)) + new[4:]
        self._pending[at : at + size] = new
        return len(new)

    def _write_out(self, count: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        view = memoryview(self._pending)[:count]
        done = 0
        while done < count:
            done += os.write(self._fd, view[done:])
        view.release()
        del self._pending[:count]
        self._parsed -= count
        self._flushable = 0
        self._written += count

    def close(self, duration: float | None = None) -> None:
        """Write out everything left, whole or not, fill in the mvhd duration, close the file."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending:
                self._write_out(len(self._pending))
            if duration is not None and self._fd is not None and self.mvhd_at is not None:
                write_mvhd_duration(self._fd, self.mvhd_at, duration)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def write_mvhd_duration(fd: int, mvhd_at: int, seconds: float) -> None:
    """Set the duration of the mvhd box at file offset `mvhd_at`, in its own timescale."""
    head = os.pread(fd, 36, mvhd_at)
    if len(head) < 36 or head[4:8] != b"mvhd":
        return
    if head[8] == 1:
        (timescale,) = struct.unpack_from(">I", head, 28)
        os.pwrite(fd, struct.pack(">Q", round(seconds * timescale)), mvhd_at + 32)
    else:
        (timescale,) = struct.unpack_from(">I", head, 20)
        os.pwrite(fd, struct.pack(">I", min(round(seconds * timescale), 0xFFFFFFFF)), mvhd_at + 24)


class SegmentWriter:
    """One growing fragmented-MP4 H.264 segment; frames are appended in time order."""

    def __init__(
        self,
        camera_dir: Path,
        start: datetime,
        renderer: FrameRenderer,
        *,
        fps: int = 10,
        gop_seconds: float = 1.0,
        preset: str = "ultrafast",
        crf: int = 28,
        mtxi: Mtxi | None = None,
    ) -> None:
        if fps < 1:
            raise ValueError("fps must be at least 1")
        self.start = as_utc(start)
        self.fps = fps
        self.gop = max(1, round(gop_seconds * fps))
        self.renderer = renderer
        self.frames = 0
        camera_dir.mkdir(parents=True, exist_ok=True)
        self.path = camera_dir / segment_name(self.start)
        self._sink = FragmentSink(self.path, mtxi)
        try:
            self._container = av.open(
                self._sink, mode="w", format="mp4", options={"movflags": MOVFLAGS}
            )
            width, height = renderer.size
            stream = self._container.add_stream(
                "libx264",
                rate=fps,
                options={
                    "preset": preset,
                    "tune": "zerolatency",
                    "threads": "1",
                    "crf": str(crf),
                    "x264-params": f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0",
                },
            )
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.codec_context.time_base = Fraction(1, fps)
            stream.codec_context.gop_size = self.gop
            self._stream = stream
        except BaseException:
            self._sink.close()
            raise

    def frame_time(self, index: int) -> datetime:
        """The wall-clock time frame `index` of this segment stands for."""
        return self.start + timedelta(microseconds=round(index * 1_000_000 / self.fps))

    @property
    def end(self) -> datetime:
        """The time just after the last frame written so far."""
        return self.frame_time(self.frames)

    def write_frames(self, count: int) -> None:
        """Render, encode and mux the next `count` frames."""
        for _ in range(count):
            frame = self.renderer.render(self.frame_time(self.frames))
            frame.pts = self.frames
            frame.time_base = Fraction(1, self.fps)
            self._container.mux(self._stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder and the last fragment, fill in the mvhd duration (as MediaMTX)."""
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._sink.close(duration=self.frames / self.fps)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_segment(
    camera_dir: Path,
    name: str,
    start: datetime,
    seconds: float,
    *,
    fps: int = 10,
    size: tuple[int, int] = (640, 360),
    gop_seconds: float = 1.0,
    mtxi: Mtxi | None = None,
) -> Path:
    """Write one complete segment of `seconds` (at least one frame) starting at `start`."""
    renderer = FrameRenderer(name, size)
    with SegmentWriter(
        camera_dir, start, renderer, fps=fps, gop_seconds=gop_seconds, mtxi=mtxi
    ) as writer:
        writer.write_frames(max(1, round(seconds * fps)))
    return writer.path
