"""Debian's Chromium driven by Playwright: where it is, how it starts, and a <video> check."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

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
# Marks of a module whose tests need the browser (skipped where it is missing, outside CI).
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs Debian's chromium"
    ),
]


async def _video_page(request: web.Request) -> web.Response:
    """A page with one muted video element loading `?src=`."""
    src = html.escape(request.query["src"], quote=True)
    body = f'<!doctype html><video id="v" muted preload="auto" src="{src}"></video>'
    return web.Response(text=body, content_type="text/html")


async def play_through(aiohttp_server: Any, src: str) -> tuple[float, float]:
    """Chromium's <video> on `src`: the duration it reports, and where playback ended."""
    from playwright.async_api import async_playwright

    pages = web.Application()
    pages.router.add_get("/", _video_page)
    site = await aiohttp_server(pages, host="127.0.0.1")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            tab = await browser.new_page()
            await tab.goto(str(site.make_url("/?" + urlencode({"src": src}))))
            await tab.wait_for_function("document.getElementById('v').readyState >= 1")
            duration = float(await tab.evaluate("document.getElementById('v').duration"))
            played = await tab.evaluate(
                """() => new Promise((resolve, reject) => {
                    const v = document.getElementById('v');
                    v.onerror = () => reject(new Error('media error ' + v.error.code));
                    v.onended = () => resolve(v.currentTime);
                    v.playbackRate = 16;
                    v.play().catch(reject);
                })"""
            )
            return duration, float(played)
        finally:
            await browser.close()
