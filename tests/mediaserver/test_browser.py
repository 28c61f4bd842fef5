"""Archives from /get play in Chromium's <video> and report the right length."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.chromium import MARKS, play_through
from tests.support.media import CAMERA, GOP, TokenFactory, at, rfc3339
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys

pytestmark = MARKS


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_archive_plays_with_the_requested_duration(
    aiohttp_server: Any, library: Path, jwks: dict[str, Any], token: TokenFactory, fmt: str
) -> None:
    """Chromium loads the archive, reports the duration asked for and plays to the end.

    A start mid-GOP (3 s; keyframes every 2 s) adds no length: mp4's edit list hides the
    lead-in, fmp4's lead-in lasts 0, as MediaMTX writes them.
    """
    media = await aiohttp_server(create_media_app(library, StaticKeys(jwks)), host="127.0.0.1")
    seconds = 20.0
    query = urlencode(
        {
            "path": CAMERA,
            "start": rfc3339(at(3)),
            "duration": seconds,
            "format": fmt,
            "jwt": token(),
        }
    )
    duration, played = await play_through(aiohttp_server, str(media.make_url(f"/get?{query}")))
    assert duration == pytest.approx(seconds, abs=0.1)
    assert played == pytest.approx(duration, abs=GOP)
