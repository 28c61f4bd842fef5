"""Fixtures for the browser pages: independent browsers and a gated media proxy."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from tests.support.pages import Browser, SlowMedia
from tests.support.service import Client
from vms import appkeys
from vms.config import Config


@pytest.fixture
def config(config: Config) -> Config:
    """The shared settings, with a read timeout long enough to hold an archive mid-way."""
    return dataclasses.replace(config, fetch_read_timeout=30.0)


@pytest.fixture
async def browsers(service: Client) -> AsyncIterator[Callable[[], Browser]]:
    """Make as many independent browsers as a test needs; all closed at the end."""
    sessions: list[aiohttp.ClientSession] = []
    base = str(service.make_url("")).rstrip("/")

    def make() -> Browser:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        return Browser(session, base)

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
async def slow_media(
    service: Client, media_server: str, unused_tcp_port_factory: Callable[[], int]
) -> AsyncIterator[SlowMedia]:
    """Camera 1 (Gate) served through the gated proxy."""
    proxy = SlowMedia(media_server)
    runner = web.AppRunner(proxy.app())
    await runner.setup()
    port = unused_tcp_port_factory()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    await service.app[appkeys.DB].put_camera(
        1, "Gate", "camera1", f"http://127.0.0.1:{port}", datetime.now(UTC)
    )
    yield proxy
    proxy.gate.set()
    await runner.cleanup()
