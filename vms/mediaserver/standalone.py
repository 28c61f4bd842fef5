"""The media server on its own: `python -m vms.mediaserver.standalone --recordings DIR ...`.

It trusts the keys published at a JWKS URL (the VMS's `/.well-known/jwks.json`), like
MediaMTX with `authJWTJWKS`, and runs until cancelled or sent SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import aiohttp

from vms.config import Config
from vms.listen import GuardedRunner, Limits, raise_open_file_limit, start_site
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import RemoteJWKS

log = logging.getLogger(__name__)


async def serve(
    recordings: Path, host: str, port: int, jwks_url: str, limits: Limits | None = None
) -> None:
    """Serve MediaMTX's playback API for `recordings` on host:port until cancelled or signalled."""
    raise_open_file_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    async with aiohttp.ClientSession() as session:
        app = create_media_app(recordings, RemoteJWKS(jwks_url, session))
        runner = GuardedRunner(app, limits or Limits.of(Config(), ports=1), access_log=None)
        await runner.setup()
        try:
            await start_site(runner, host, port)
            log.info("[playback] listener opened on %s:%s", host, port)
            await stop.wait()
        finally:
            log.info("[playback] listener is closing")
            await runner.cleanup()
            for sig in handled:
                loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description="MediaMTX-compatible playback server")
    parser.add_argument("--recordings", type=Path, required=True, help="RECORDINGS directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9996)
    parser.add_argument("--jwks-url", required=True, help="where the trusted public keys are")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.recordings, args.host, args.port, args.jwks_url))


if __name__ == "__main__":
    main()
