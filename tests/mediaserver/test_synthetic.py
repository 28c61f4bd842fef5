"""Synthetic recordings: file names, the time stripe, and real fragmented-MP4 H.264 segments."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vms.mediaserver.recordings import parse_segment_name, segment_name
from vms.mediaserver.synthetic import (
    FrameRenderer,
    SegmentWriter,
    decode_stripe,
    decode_stripe_luma,
    encode_stripe,
    format_time,
    paint_stripe,
    stripe_height,
    trim_partial_tail,
    write_segment,
)

START = datetime(2026, 11, 23, 10, 20, 5, 400000, tzinfo=UTC)


def top_level_boxes(data: bytes) -> list[tuple[str, int]]:
    """Split MP4 bytes into (type, size) of whole top-level boxes; a partial tail is dropped."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8 or offset + size > len(data):
            break
        boxes.append((kind.decode(), size))
        offset += size
    return boxes


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_segment_filename_is_utc_with_microseconds():
    """A segment is named by its start in UTC, down to the microsecond."""
    plus_two = timezone(timedelta(hours=2))
    start = datetime(2026, 11, 23, 12, 20, 5, 123456, tzinfo=plus_two)
    assert segment_name(start) == "2026-11-23_10-20-05-123456.mp4"
    assert segment_name(start.astimezone(UTC).replace(tzinfo=None)) == segment_name(start)
    assert parse_segment_name(segment_name(start)) == start


@pytest.mark.parametrize(
    "name", ["2026-11-23_10-20-05.mp4", "2026-11-23_10-20-05-123456.mkv", "notes.txt", "x.mp4"]
)
def test_parse_segment_name_rejects_other_files(name):
    """Files that are not segments are recognised as such."""
    assert parse_segment_name(name) is None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        START,
        datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    ],
)
def test_stripe_round_trip_on_raw_pixels(moment):
    """A painted stripe reads back as the time to the millisecond (truncated)."""
    luma = np.full((360, 640), 90, dtype=np.uint8)
    paint_stripe(luma, encode_stripe(moment))
    assert decode_stripe_luma(luma) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_stripe_layout_matches_the_document():
    """The stripe is marker 0xB2, 48 bits of epoch ms and CRC-8, as in docs/STRIPE.md."""
    bits = encode_stripe(datetime(2026, 11, 23, 10, 20, 5, 400000, tzinfo=UTC))
    word = int("".join(map(str, bits)), 2)
    assert word >> 56 == 0xB2
    assert (word >> 8) & (2**48 - 1) == 1795429205400
    assert word & 0xFF == 0x68


@pytest.mark.parametrize(
    "damage",
    ["blank", "noise", "flipped bit", "no marker"],
)
def test_decode_stripe_rejects_frames_without_a_valid_stripe(damage):
    """A frame with no stripe, or a damaged one, is reported as unreadable."""
    luma = np.full((360, 640), 90, dtype=np.uint8)
    bits = encode_stripe(START)
    if damage == "noise":
        luma = np.random.default_rng(1).integers(0, 256, (360, 640), dtype=np.uint8)
    elif damage == "flipped bit":
        bits[30] ^= 1
        paint_stripe(luma, bits)
    elif damage == "no marker":
        bits[0:8] = [0, 1, 0, 0, 1, 1, 0, 1]
        paint_stripe(luma, bits)
    with pytest.raises(ValueError):
        decode_stripe_luma(luma)


def test_every_frame_carries_its_own_time(tmp_path):
    """Frame i of a written segment shows start + i/fps in its stripe, with exact PTS."""
    path = write_segment(tmp_path / "cam", "Gate", START, 3, fps=10, size=(320, 180))
    assert path == tmp_path / "cam" / "2026-11-23_10-20-05-400000.mp4"
    frames = decoded_frames(path)
    assert len(frames) == 30
    for i, frame in enumerate(frames):
        assert frame.time == pytest.approx(i / 10)
        assert decode_stripe(frame) == START + timedelta(milliseconds=100 * i)


@pytest.mark.parametrize(
    ("fps", "gop_seconds", "seconds"), [(10, 1.0, 4), (5, 2.0, 5), (25, 0.4, 2), (30, 1.0, 2)]
)
def test_segment_is_fragmented_mp4_with_duration_and_keyframes(tmp_path, fps, gop_seconds, seconds):
    """The file is ftyp+empty moov then moof/mdat per GOP, lasting `seconds`, keyframes on time."""
    path = write_segment(
        tmp_path, "Gate", START, seconds, fps=fps, size=(320, 180), gop_seconds=gop_seconds
    )
    kinds = [kind for kind, _ in top_level_boxes(path.read_bytes())]
    gops = -(-seconds * fps // round(gop_seconds * fps))
    assert kinds[:2] == ["ftyp", "moov"]
    assert kinds[2 : 2 + 2 * gops] == ["moof", "mdat"] * gops
    assert set(kinds[2 + 2 * gops :]) <= {"mfra"}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        packets = [p for p in container.demux(stream) if p.size]
    assert len(packets) == seconds * fps
    times = [float(p.pts * p.time_base) for p in packets if p.pts is not None and p.time_base]
    assert times == pytest.approx([i / fps for i in range(seconds * fps)])
    last = packets[-1]
    assert last.duration is not None and last.time_base is not None
    assert last.duration * last.time_base == Fraction(1, fps)
    keyframe_times = [t for t, p in zip(times, packets, strict=True) if p.is_keyframe]
    assert keyframe_times == pytest.approx([k * gop_seconds for k in range(gops)], abs=1e-3)
    for i, frame in enumerate(decoded_frames(path)):
        expected = START + timedelta(microseconds=round(i * 1_000_000 / fps))
        assert decode_stripe(frame) == expected.replace(
            microsecond=expected.microsecond // 1000 * 1000
        )


@pytest.mark.parametrize(("crf", "scale"), [(28, 1.0), (45, 1.0), (51, 1.0), (35, 0.5), (40, 0.25)])
def test_stripe_survives_heavy_compression_and_scaling(tmp_path, crf, scale):
    """Re-encoded at low quality and/or scaled down, every frame's stripe still decodes."""
    source = write_segment(tmp_path / "src", "Gate", START, 1, fps=10)
    width, height = int(640 * scale) // 2 * 2, int(360 * scale) // 2 * 2
    target = tmp_path / "reencoded.mp4"
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream(
            "libx264", rate=10, options={"crf": str(crf), "preset": "ultrafast"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            scaled = frame.reformat(width=width, height=height)
            scaled.pts, scaled.time_base = i, Fraction(1, 10)
            dst.mux(stream.encode(scaled))
        dst.mux(stream.encode(None))
    frames = decoded_frames(target)
    assert [decode_stripe(f) for f in frames] == [
        START + timedelta(milliseconds=100 * i) for i in range(10)
    ]


def test_growing_segment_is_readable_while_written(tmp_path):
    """While a segment is open, the file holds only whole boxes and plays up to the last GOP."""
    renderer = FrameRenderer("Gate", (320, 180))
    with SegmentWriter(tmp_path, START, renderer, fps=10, gop_seconds=1.0) as writer:
        assert not writer.path.exists()  # no empty file is ever listed
        writer.write_frames(10)
        assert [k for k, _ in top_level_boxes(writer.path.read_bytes())] == ["ftyp", "moov"]
        for gop in range(1, 4):
            writer.write_frames(10)  # the keyframe of the next GOP closes the previous fragment
            data = writer.path.read_bytes()
            assert sum(size for _, size in top_level_boxes(data)) == len(data)
            frames = decoded_frames(writer.path)
            assert len(frames) == 10 * gop
            assert decode_stripe(frames[-1]) == START + timedelta(milliseconds=100 * (10 * gop - 1))
    assert len(decoded_frames(writer.path)) == 40


@pytest.mark.parametrize(
    ("where", "frames_left"),
    [("intact", 30), ("mid mdat", 20), ("after moof", 20), ("mid moof", 20), ("mid moov", 0)],
)
def test_trim_partial_tail_keeps_whole_fragments(tmp_path, where, frames_left):
    """A segment cut short anywhere is trimmed back to whole fragments that all decode."""
    path = write_segment(tmp_path, "Gate", START, 3, fps=10, size=(320, 180))
    data = path.read_bytes()
    boxes = top_level_boxes(data)
    ends = [sum(size for _, size in boxes[: i + 1]) for i in range(len(boxes))]
    last_moof = max(i for i, (kind, _) in enumerate(boxes) if kind == "moof")
    cut = {
        "intact": len(data),
        "mid mdat": ends[last_moof] + 100,
        "after moof": ends[last_moof],
        "mid moof": ends[last_moof - 1] + 20,
        "mid moov": ends[0] + 40,
    }[where]
    path.write_bytes(data[:cut])
    removed = trim_partial_tail(path)
    trimmed = path.read_bytes()
    assert len(trimmed) + removed == cut
    assert sum(size for _, size in top_level_boxes(trimmed)) == len(trimmed)
    assert trim_partial_tail(path) == 0
    if frames_left:
        frames = decoded_frames(path)
        assert [decode_stripe(f) for f in frames] == [
            START + timedelta(milliseconds=100 * i) for i in range(frames_left)
        ]
    else:
        assert trimmed == b""


def test_frame_shows_name_and_time_as_digits():
    """The readable time is the UTC time truncated to milliseconds, drawn over the picture."""
    assert format_time(START + timedelta(microseconds=999)) == "2026-11-23 10:20:05.400"
    renderer = FrameRenderer("Gate", (640, 360))
    first = renderer.render(START).to_ndarray(format="gray")
    second = renderer.render(START + timedelta(milliseconds=100)).to_ndarray(format="gray")
    changed_rows = np.nonzero((first != second).any(axis=1))[0]
    band_top = 360 - stripe_height(360)
    # Only the digits line and the stripe change from frame to frame.
    assert changed_rows.min() > 360 // 2
    assert set(changed_rows) - set(range(band_top, 360))


@pytest.mark.parametrize(
    ("size", "fps"), [((641, 360), 10), ((640, 361), 10), ((100, 80), 10), ((640, 360), 0)]
)
def test_write_segment_rejects_bad_parameters(tmp_path, size, fps):
    """Odd or tiny frame sizes and a zero frame rate are refused."""
    with pytest.raises(ValueError):
        write_segment(tmp_path, "Gate", START, 1, fps=fps, size=size)
