"""The joiner turns several fragmented MP4 /get answers into one, whatever their chunking.

Its input is a media server's reply, so it is untrusted: a broken box is an error in a
sentence, never a crash or an unbounded buffer.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest

from vms.archive.joiner import FragmentJoiner, JoinError
from vms.mediaserver.mp4read import iter_boxes
from vms.mediaserver.synthetic import decode_stripe, write_segment

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def piece(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real fragmented MP4 of 4 s (H.264 at 5 fps, a keyframe each second)."""
    directory = tmp_path_factory.mktemp("piece")
    path = write_segment(directory, "Gate", T0, 4, fps=5, size=(160, 96), gop_seconds=1.0)
    return path.read_bytes()


def _join(
    pieces: list[bytes], expected: float, chunk: int | None = None, *, in_band: bool = False
) -> tuple[bytes, list[float]]:
    joiner = FragmentJoiner(expected, in_band=in_band)
    out: list[bytes] = []
    seconds = []
    rng = random.Random(7)
    for data in pieces:
        joiner.start_piece()
        position = 0
        while position < len(data):
            size = chunk or rng.randint(1, 9000)
            out.extend(joiner.feed(data[position : position + size]))
            position += size
        seconds.append(joiner.end_piece())
    return b"".join(out), seconds


def _times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [
            float(frame.pts * frame.time_base)
            for frame in container.decode(video=0)
            if frame.pts is not None and frame.time_base is not None
        ]


@pytest.mark.parametrize("chunk", [1, 7, 4096, None])
def test_pieces_in_any_chunking_make_one_continuous_file(
    piece: bytes, chunk: int | None, tmp_path: Path
) -> None:
    """Fed a byte, a few bytes or random sizes at a time: the same file, 3 x 4 s, 60 frames
    whose times run on without a jump; each piece measured at 4 s."""
    joined, seconds = _join([piece] * 3, 12.0, chunk)
    assert joined == _join([piece] * 3, 12.0, 1 << 30)[0]
    assert seconds == pytest.approx([4.0, 4.0, 4.0], abs=0.01)
    path = tmp_path / "joined.mp4"
    path.write_bytes(joined)
    times = _times(path)
    assert len(times) == 60
    assert times == pytest.approx([n / 5 for n in range(60)], abs=0.001)
    kinds = [kind for kind, _, _ in iter_boxes(joined)]
    assert kinds[:2] == [b"ftyp", b"moov"] and b"mfra" not in kinds


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(kind, data[payload - 8 : end]) for kind, payload, end in iter_boxes(data)]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[: len(d) - 5], "incomplete video"),
        (lambda d: b"\x00\x00\x00\x04moov" + d, "broken MP4 box"),
        (lambda d: struct.pack(">I4s", 0x7FFFFFFF, b"moov") + d, "oversized moov box"),
        (lambda d: _without(d, b"moov"), "fragment before the movie header"),
        (lambda d: _without(d, b"ftyp"), "no ftyp box"),
        (lambda d: _mdat_to_end(d), "mdat of unknown length"),
    ],
)
def test_broken_pieces_are_refused_in_a_sentence(
    piece: bytes, mutate: Callable[[bytes], bytes], message: str
) -> None:
    """Truncated, broken, oversized or out of order: JoinError naming the fault, at once."""
    joiner = FragmentJoiner(4.0)
    joiner.start_piece()
    with pytest.raises(JoinError, match=message):
        joiner.feed(mutate(piece))
        joiner.end_piece()


def _without(data: bytes, kind: bytes) -> bytes:
    return b"".join(raw for found, raw in _boxes(data) if found != kind)


def _mdat_to_end(data: bytes) -> bytes:
    parts = []
    for kind, raw in _boxes(data):
        if kind == b"mdat":
            parts.append(struct.pack(">I4s", 0, b"mdat") + raw[8:])
            break
        parts.append(raw)
    return b"".join(parts)


def test_an_oversized_box_is_refused_before_it_is_buffered(piece: bytes) -> None:
    """A header claiming a 2 GB moof is refused on its first 8 bytes, nothing held."""
    joiner = FragmentJoiner(4.0)
    joiner.start_piece()
    header = b"".join(raw for kind, raw in _boxes(piece)[:2])
    joiner.feed(header)
    with pytest.raises(JoinError, match="oversized moof"):
        joiner.feed(struct.pack(">I4s", 0x7FFFFFFF, b"moof"))


def test_another_picture_size_carries_its_parameter_sets_in_band(tmp_path: Path) -> None:
    """320x180, 640x360, 320x180: one track, each frame decoded at its own size and showing
    its own moment, fed in odd-sized chunks."""
    pieces = []
    for index, size in enumerate([(320, 180), (640, 360), (320, 180)]):
        moment = T0.replace(second=10 * index)
        path = write_segment(tmp_path / str(index), "Gate", moment, 4, fps=5, size=size)
        pieces.append(path.read_bytes())
    joined, seconds = _join(pieces, 12.0, 777, in_band=True)
    assert seconds == pytest.approx([4.0, 4.0, 4.0], abs=0.01)
    path = tmp_path / "joined.mp4"
    path.write_bytes(joined)
    with av.open(str(path)) as container:
        frames = [(f.width, decode_stripe(f).second) for f in container.decode(video=0)]
    assert len(frames) == 60
    assert [w for w, _ in frames] == [320] * 20 + [640] * 20 + [320] * 20
    assert [s for _, s in frames] == [10 * (n // 20) + (n % 20) // 5 for n in range(60)]
