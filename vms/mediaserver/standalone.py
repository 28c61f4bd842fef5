"""The media server on its own, for another box: `python server.py media-server ...`.

It trusts the keys published at a JWKS URL (the VMS's `/.well-known/jwks.json`), like
MediaMTX with `authJWTJWKS`, and runs until cancelled or sent SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp

from vms.config import Config
from vms.listen import GuardedRunner, Limits, raise_open_file_limit, start_site, stop_on_signals
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import RemoteJWKS

log = logging.getLogger(__name__)


async def serve(
    recordings: Path, host: str, port: int, jwks_url: str, limits: Limits | None = None
) -> None:
    """Serve MediaMTX's playback API for `recordings` on host:port until cancelled or signalled."""
    raise_open_file_limit()
    async with aiohttp.ClientSession() as session:
        app = create_media_app(recordings, RemoteJWKS(jwks_url, session))
        runner = GuardedRunner(app, limits or Limits.of(Config(), ports=1), access_log=None)
        with stop_on_signals() as stop:
            await runner.setup()
            try:
                await start_site(runner, host, port)
                log.info("[playback] listener opened on %s:%s", host, port)
                await stop.wait()
            finally:
                log.info("[playback] listener is closing")
                await runner.cleanup()
