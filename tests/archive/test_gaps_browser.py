"""An archive joined across a gap plays in Chromium's <video> to its end, at its length."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.archive.conftest import Recordings
from tests.support.chromium import MARKS, play_through
from tests.support.service import PHONE, Client, Footage, bearer, login, rfc3339, wait_status
from vms.mediaserver.synthetic import write_segment

pytestmark = MARKS


async def _ready_src(
    service: Client, user: str, camera: int, start: datetime, end: datetime
) -> str:
    """The download URL of a ready archive asked for by `user`'s phone."""
    phone = await login(service, user, device=PHONE, x_client="ios-cctv")
    response = await service.get(
        f"/api/v1/cameras/{camera}/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(end)},
        headers=bearer(phone, PHONE, "ios-cctv"),
    )
    download_id = (await response.json())["download"]["id"]
    ready = await wait_status(service, phone, download_id, {"ready"}, timeout=60)
    url = urlsplit(ready["url"])
    return str(service.make_url(f"{url.path}?{url.query}"))


async def test_an_archive_across_a_gap_plays_to_the_end(
    service: Client, footage: Footage, aiohttp_server: Any
) -> None:
    """Camera 2's 30 s before and 30 s after its gap: Chromium says 60 s and plays it through."""
    start = footage.start + timedelta(seconds=150)
    src = await _ready_src(service, "bob", 2, start, start + timedelta(seconds=120))
    duration, played = await play_through(aiohttp_server, src)
    assert 59 <= duration <= 61.5
    assert played == pytest.approx(duration, abs=2.0)


async def test_an_archive_whose_picture_size_changes_plays_to_the_end(
    service: Client, own_recordings: Recordings, aiohttp_server: Any
) -> None:
    """320x180, a gap, then 640x360 (parameter sets in-band): Chromium plays it through."""
    origin = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    write_segment(own_recordings.root / "camera1", "Gate", origin, 20, fps=5, size=(320, 180))
    later = origin + timedelta(seconds=30)
    write_segment(own_recordings.root / "camera1", "Gate", later, 20, fps=5, size=(640, 360))
    src = await _ready_src(service, "alice", 1, origin, origin + timedelta(seconds=50))
    duration, played = await play_through(aiohttp_server, src)
    assert 39 <= duration <= 41.5
    assert played == pytest.approx(duration, abs=2.0)
