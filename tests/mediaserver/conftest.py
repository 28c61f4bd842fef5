"""Fixtures for the media server: real recordings made by PyAV, real keys, real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.media import CAMERA, TokenFactory, public_jwk, segment
from tests.support.service import Client
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys


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


@pytest.fixture(scope="session")
def jwks(signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The VMS's public JWKS."""
    return {"keys": [public_jwk(signing_key, "vms-1", "EdDSA")]}


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
async def client(aiohttp_client: Callable[..., Any], library: Path, jwks: dict[str, Any]) -> Client:
    """A test client of the media server over the shared library."""
    client: Client = await aiohttp_client(create_media_app(library, StaticKeys(jwks)))
    return client
