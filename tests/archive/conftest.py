"""Fixtures for server-side archive tests: a misbehaving media server behind camera 1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.support.badserver import BadMediaServer, make_mp4, serve
from tests.support.service import Client
from vms import appkeys


@pytest.fixture(scope="session")
def mp4_body() -> bytes:
    """A real MP4 the misbehaving server sends when it behaves."""
    return make_mp4()


@pytest.fixture
async def bad_media(mp4_body: bytes) -> AsyncIterator[tuple[BadMediaServer, str]]:
    """A media server on loopback whose /get misbehaves as its `mode` says."""
    server = BadMediaServer(body=mp4_body)
    generator = serve(server)
    url = await generator.__anext__()
    yield server, url
    await generator.aclose()


@pytest.fixture
async def bad_camera(service: Client, bad_media: tuple[BadMediaServer, str]) -> BadMediaServer:
    """Camera 1 moved onto the misbehaving media server."""
    server, url = bad_media
    await service.app[appkeys.DB].put_camera(1, "Gate", "camera1", url, datetime.now(UTC))
    return server
