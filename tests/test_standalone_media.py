"""The media server on its own (`server.py media-server`) trusts the VMS through its JWKS URL."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import av
import pytest

from tests.support.processes import Service
from tests.support.service import Footage, rfc3339


@pytest.fixture
async def vms_and_media(
    tmp_path: Path, footage: Footage, unused_tcp_port_factory: Callable[[], int]
) -> AsyncIterator[tuple[Service, int]]:
    """The VMS without an embedded media server, and a standalone one reading the footage."""
    service = Service(tmp_path / "data", unused_tcp_port_factory())
    media_port = unused_tcp_port_factory()
    service.cli(
        "camera", "add", "1", "--name", "Gate", "--media-server", f"http://127.0.0.1:{media_port}"
    )
    service.cli("user", "add", "alice", "--password", "pw-alice-long", "--camera", "1")
    await service.start()
    media = Service(tmp_path / "media-data", media_port)
    try:
        await media.start(
            "media-server", "--recordings", str(footage.root), "--port", str(media_port),
            "--jwks", f"http://127.0.0.1:{service.port}/.well-known/jwks.json",
        )  # fmt: skip
        yield service, media_port
    finally:
        media.kill(signal.SIGTERM)
        service.kill()


async def test_thick_link_from_a_separate_media_server_plays(
    vms_and_media: tuple[Service, int], footage: Footage, tmp_path: Path
) -> None:
    """The VMS asks the standalone server's /list, and its link downloads a playable MP4."""
    service, media_port = vms_and_media
    base = f"http://127.0.0.1:{service.port}"
    device = {"X-Client": "thick-legal", "X-UUID": "desk"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/token",
            json={"login": "alice", "password": "pw-alice-long"},
            headers=device,
        ) as response:
            token = (await response.json())["access_token"]
        start = footage.start + timedelta(seconds=20)
        async with http.get(
            f"{base}/api/v1/cameras/1/archive/link",
            params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=90))},
            headers={**device, "Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200, await response.text()
            link = (await response.json())["link"]
        assert link.startswith(f"http://127.0.0.1:{media_port}/get?")
        async with http.get(link) as response:
            assert response.status == 200
            (tmp_path / "a.mp4").write_bytes(await response.read())
        async with http.get(link.split("&jwt=")[0]) as response:
            assert response.status == 401  # no token, no video
        async with http.get(link[:-3] + "AAA") as response:
            assert response.status == 401  # a tampered signature is refused
    with av.open(str(tmp_path / "a.mp4")) as container:
        assert container.streams.video
        seconds = float(container.duration or 0) / 1_000_000
    assert 90 - 2.5 <= seconds <= 90 + 2.5
