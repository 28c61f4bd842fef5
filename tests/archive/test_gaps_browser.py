"""An archive joined across a gap plays in Chromium's <video> to its end, at its length."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.chromium import MARKS, play_through
from tests.support.service import PHONE, Client, Footage, bearer, login, rfc3339, wait_status

pytestmark = MARKS


async def test_an_archive_across_a_gap_plays_to_the_end(
    service: Client, footage: Footage, aiohttp_server: Any
) -> None:
    """Camera 2's 30 s before and 30 s after its gap: Chromium says 60 s and plays it through."""
    start = footage.start + timedelta(seconds=150)
    phone = await login(service, "bob", device=PHONE, x_client="ios-cctv")
    response = await service.get(
        "/api/v1/cameras/2/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=120))},
        headers=bearer(phone, PHONE, "ios-cctv"),
    )
    download_id = (await response.json())["download"]["id"]
    ready = await wait_status(service, phone, download_id, {"ready"}, timeout=60)
    url = urlsplit(ready["url"])
    duration, played = await play_through(
        aiohttp_server, str(service.make_url(f"{url.path}?{url.query}"))
    )
    assert 59 <= duration <= 61.5
    assert played == pytest.approx(duration, abs=2.0)
