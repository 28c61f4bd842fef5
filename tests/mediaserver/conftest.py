"""Fixtures for the media server: real recordings made by PyAV, real keys, real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import jwt
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys
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


def segment(root: Path, path: str, start: float, seconds: float, gop: float = GOP) -> Path:
    """Write one recorded segment of `path` starting `start` seconds after T0."""
    return write_segment(root / path, path, at(start), seconds, fps=FPS, size=SIZE, gop_seconds=gop)


def noise_segment(root: Path, path: str, start: float, frames: int, fps: int = 25) -> Path:
    """A short segment of random noise: a few megabytes quickly, for streaming tests."""
    directory = root / path
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (at(start).strftime("%Y-%m-%d_%H-%M-%S-%f") + ".mp4")
    rng = np.random.default_rng(7)
    with av.open(
        str(target),
        "w",
        format="mp4",
        options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
    ) as container:
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


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recordings shared by read-only tests.

    cam1: 0-10 s, 10-20 s, 20.5-30.5 s (a 0.5 s gap: one span), then 40-50 s after a 9.5 s gap.
    cam2: 0-10 s. GOP 2 s, 10 fps.
    """
    root = tmp_path_factory.mktemp("recordings")
    segment(root, CAMERA, 0, 10)
    segment(root, CAMERA, 10, 10)
    segment(root, CAMERA, 20.5, 10)
    segment(root, CAMERA, 40, 10)
    segment(root, "cam2", 0, 10)
    return root


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    """The VMS's media-token key."""
    return Ed25519PrivateKey.generate()


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of a cryptography private key, as the VMS publishes it."""
    algorithm = jwt.get_algorithm_by_name(alg)
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    entry.update(kid=kid, alg=alg, use="sig")
    return entry


@pytest.fixture(scope="session")
def jwks(signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The VMS's public JWKS."""
    entry = json.loads(OKPAlgorithm.to_jwk(signing_key.public_key()))
    entry.update(kid="vms-1", alg="EdDSA", use="sig")
    return {"keys": [entry]}


@pytest.fixture
def token(signing_key: Ed25519PrivateKey) -> TokenFactory:
    """Make media tokens: `token(path)` grants playback of `path`; keywords replace claims."""

    def make(
        path: str = CAMERA,
        *,
        key: Any = None,
        alg: str = "EdDSA",
        kid: str | None = "vms-1",
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "aud": "media-server",
            "exp": now + 300,
            "iat": now,
            "mediamtx_permissions": [{"action": "playback", "path": path}],
        }
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(payload, key or signing_key, algorithm=alg, headers=headers)

    return make


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], library: Path, jwks: dict[str, Any]
) -> TestClient[Any, Any]:
    """A test client of the media server over the shared library."""
    return await aiohttp_client(create_media_app(library, StaticKeys(jwks)))  # type: ignore[no-any-return]
