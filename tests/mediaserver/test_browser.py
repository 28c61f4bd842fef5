"""Archives from /get play in Chromium's <video> and report the right length."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from tests.support.media import CAMERA, GOP, TokenFactory, at, rfc3339
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="Debian's chromium is not installed",
    ),
]


async def page(request: web.Request) -> web.Response:
    """A page with one video element playing `?src=`."""
    src = html.escape(request.query["src"], quote=True)
    body = f'<!doctype html><video id="v" muted preload="auto" src="{src}"></video>'
    return web.Response(text=body, content_type="text/html")


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_archive_plays_with_the_requested_duration(
    aiohttp_server: Any, library: Path, jwks: dict[str, Any], token: TokenFactory, fmt: str
) -> None:
    """Chromium loads the archive, reports the duration asked for and plays to the end.

    A start mid-GOP (3 s; keyframes every 2 s) adds no length: mp4's edit list hides the
    lead-in, fmp4's lead-in lasts 0, as MediaMTX writes them.
    """
    from playwright.async_api import async_playwright

    media = await aiohttp_server(create_media_app(library, StaticKeys(jwks)), host="127.0.0.1")
    pages = web.Application()
    pages.router.add_get("/", page)
    site = await aiohttp_server(pages, host="127.0.0.1")
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
    src = str(media.make_url(f"/get?{query}"))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            tab = await browser.new_page()
            await tab.goto(str(site.make_url("/?" + urlencode({"src": src}))))
            await tab.wait_for_function("document.getElementById('v').readyState >= 1")
            duration = await tab.evaluate("document.getElementById('v').duration")
            assert duration == pytest.approx(seconds, abs=0.1)
            played = await tab.evaluate(
                """() => new Promise((resolve, reject) => {
                    const v = document.getElementById('v');
                    v.onerror = () => reject(new Error('media error ' + v.error.code));
                    v.onended = () => resolve(v.currentTime);
                    v.playbackRate = 16;
                    v.play().catch(reject);
                })"""
            )
            assert played == pytest.approx(duration, abs=GOP)
        finally:
            await browser.close()
