"""Helpers for media-server tests: recordings made by PyAV at known times, and token keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import jwt
import numpy as np

from vms.mediaserver.mp4read import Mtxi
from vms.mediaserver.synthetic import write_segment

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
FPS = 10
GOP = 2.0
SIZE = (640, 360)
CAMERA = "cam1"

TokenFactory = Callable[..., str]


def at(seconds: float) -> datetime:
    """The library's recording time `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def rfc3339(moment: datetime) -> str:
    """A UTC RFC 3339 string as the VMS sends it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def segment(
    root: Path,
    path: str,
    start: float,
    seconds: float,
    gop: float = GOP,
    *,
    mtxi: Mtxi | None = None,
    size: tuple[int, int] = SIZE,
) -> Path:
    """Write one recorded segment of `path` starting `start` seconds after T0."""
    return write_segment(
        root / path, path, at(start), seconds, fps=FPS, size=size, gop_seconds=gop, mtxi=mtxi
    )


def mtxi(stream: int, number: int, dts: float, ntp: float = 0.0) -> Mtxi:
    """An mtxi box for stream number `stream` (any small int), DTS and NTP in seconds."""
    return Mtxi(
        stream_id=stream.to_bytes(16, "big"),
        number=number,
        dts=round(dts * 1e9),
        ntp=round((at(ntp) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e9),
    )


def _segment_path(root: Path, path: str, start: float) -> Path:
    """Where a segment of `path` starting `start` seconds after T0 goes (its folder made)."""
    directory = root / path
    directory.mkdir(parents=True, exist_ok=True)
    return directory / (at(start).strftime("%Y-%m-%d_%H-%M-%S-%f") + ".mp4")


def _fragmented_writer(target: Path) -> av.container.OutputContainer:
    """A PyAV writer of fragmented MP4 in MediaMTX's segment layout."""
    return av.open(
        str(target),
        "w",
        format="mp4",
        options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
    )


def noise_segment(root: Path, path: str, start: float, frames: int, fps: int = 25) -> Path:
    """A short segment of random noise: a few megabytes quickly, for streaming tests."""
    target = _segment_path(root, path, start)
    rng = np.random.default_rng(7)
    with _fragmented_writer(target) as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"preset": "ultrafast", "crf": "10", "g": str(fps)}
        )
        stream.width, stream.height = 640, 360
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for index in range(frames):
            pixels = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return target


def av_segment(root: Path, path: str, start: float, seconds: float) -> Path:
    """A segment with H.264 video (10 fps, keyframes every 2 s) and AAC audio (48 kHz mono)."""
    target = _segment_path(root, path, start)
    with _fragmented_writer(target) as container:
        options = {"g": str(2 * FPS), "preset": "ultrafast", "tune": "zerolatency"}
        video = container.add_stream("libx264", rate=FPS, options=options)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        written = 0
        for index in range(round(seconds * FPS)):
            pixels = np.full((240, 320, 3), index % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(video.encode(frame))
            while written < (index + 1) * 48000 // FPS:
                silence = np.zeros((1, 1024), np.float32)
                chunk = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, written
                chunk.time_base = Fraction(1, 48000)
                container.mux(audio.encode(chunk))
                written += 1024
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return target


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of a cryptography private key, as the VMS publishes it."""
    algorithm = jwt.get_algorithm_by_name(alg)
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    entry.update(kid=kid, alg=alg, use="sig")
    return entry
