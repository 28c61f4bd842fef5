"""Fixtures for server-side archive tests: a misbehaving or a private media server for camera 1."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.badserver import BadMediaServer, StopAtGap, make_mp4, serve
from tests.support.service import Client
from vms import appkeys
from vms.config import Config
from vms.keystore import load_or_create
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys


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


@dataclasses.dataclass(frozen=True)
class Recordings:
    """A media server of the test's own over recordings it writes: where, and its URL."""

    root: Path
    url: str


@pytest.fixture
async def own_recordings(
    service: Client, config: Config, tmp_path: Path
) -> AsyncIterator[Recordings]:
    """Camera 1 (Gate) moved onto an embedded media server over the test's own recordings."""
    root = tmp_path / "own-recordings"
    root.mkdir()
    app = create_media_app(root, StaticKeys(load_or_create(config.keys_dir).jwks()))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await service.app[appkeys.DB].put_camera(1, "Gate", "camera1", url, datetime.now(UTC))
    yield Recordings(root, url)
    await server.close()


@pytest.fixture
async def stop_at_gap(service: Client, media_server: str) -> AsyncIterator[StopAtGap]:
    """Camera 2 (Lobby, with a gap) behind a proxy whose /get stops at gaps, like MediaMTX."""
    proxy = StopAtGap(media_server)
    runner = web.AppRunner(proxy.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await service.app[appkeys.DB].put_camera(
        2, "Lobby", "camera2", f"http://127.0.0.1:{port}", datetime.now(UTC)
    )
    yield proxy
    await runner.cleanup()
