"""create_app(config): wiring only; every piece with a lifetime lives in a cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from aiohttp import web

from vms import keys, openapi
from vms.api import archive, files, push, sessions
from vms.api.errors import api_errors
from vms.archive.cleanup import cleanup_forever
from vms.archive.files import ArchiveFiles
from vms.archive.jobs import ArchiveService
from vms.archive.links import LinkService
from vms.archive.mediaclient import MediaClient
from vms.auth import Authenticator
from vms.bootstrap import DEMO_CAMERAS, ensure_demo_cameras
from vms.config import Config
from vms.dates import utcnow
from vms.db import Database
from vms.keystore import load_or_create
from vms.listen import GuardedRunner, Limits, start_site
from vms.logs import AccessLogger, scrub_library_logs
from vms.push.hub import Hub
from vms.validation import ArchiveLinkSchema, DownloadListSchema
from vms.web.routes import setup_pages

log = logging.getLogger(__name__)


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    app[keys.KEYSTORE] = load_or_create(config.keys_dir)
    app[keys.DB] = db = await Database.open(config.database_path)
    app[keys.AUTH] = Authenticator(config, db, app[keys.KEYSTORE])
    yield
    await db.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    auth = app[keys.AUTH]
    keystore = app[keys.KEYSTORE]
    app[keys.HUB] = hub = Hub(keystore.app_key, keystore.app_secret)
    app[keys.SESSION_ENDED].append(hub.disconnect_session)
    app[keys.WSURL_THROTTLE] = push.wsurl_throttle()
    app[keys.LINK_SCHEMA] = ArchiveLinkSchema(config.tz, config.max_range)
    app[keys.LIST_SCHEMA] = DownloadListSchema(config.tz)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        app[keys.HTTP] = http
        app[keys.MEDIA] = media = MediaClient(http, lambda path: auth.media_token(path, utcnow()))
        app[keys.LINKS] = LinkService(app[keys.DB], auth, media)
        archive_files = ArchiveFiles(config.archives_dir, config.base_url, keystore.url_secret)
        app[keys.ARCHIVES] = archives = ArchiveService(
            config, app[keys.DB], auth, http, archive_files, hub
        )
        hub.on_subscribed.append(archives.replay)
        await archives.start()
        cleaner = asyncio.create_task(
            cleanup_forever(app[keys.DB], archive_files, config.cleanup_interval),
            name="archive-cleanup",
        )
        yield
        cleaner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleaner
        await archives.stop()


async def _media_server(app: web.Application) -> AsyncIterator[None]:
    """The embedded MediaMTX-compatible server on its own port, with the demo cameras."""
    config = app[keys.CONFIG]
    if config.media_port == 0:
        yield
        return
    from vms.mediaserver.app import create_media_app
    from vms.mediaserver.auth import StaticKeys
    from vms.mediaserver.demo import DemoCamera, DemoRecorder

    config.recordings_dir.mkdir(parents=True, exist_ok=True)
    media_app = create_media_app(
        config.recordings_dir, StaticKeys(app[keys.KEYSTORE].jwks()), public_url=config.media_url
    )
    runner = GuardedRunner(media_app, Limits.of(config, ports=2), access_log_class=AccessLogger)
    await runner.setup()
    await start_site(runner, config.host, config.media_port)
    log.info("embedded media server on %s", config.media_url)
    recorder: asyncio.Task[None] | None = None
    if config.demo_cameras:
        await ensure_demo_cameras(app[keys.DB], config, utcnow())
        cameras = [DemoCamera(path=path, name=name) for _, name, path in DEMO_CAMERAS]
        # Six hours of demo footage is about 170 MB a camera; plenty to try the archive with.
        demo = DemoRecorder(config.recordings_dir, cameras, retention=timedelta(hours=6))
        recorder = asyncio.create_task(demo.run(), name="demo-recorder")
    yield
    if recorder is not None:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
    await runner.cleanup()


async def _close_sockets(app: web.Application) -> None:
    await app[keys.HUB].close_all()


def create_app(config: Config) -> web.Application:
    """The service's application for `config`; start it with web.run_app or a test client."""
    scrub_library_logs()
    app = web.Application(
        middlewares=[api_errors],
        client_max_size=64 * 1024,
        # A request line up to 128 KiB reaches validation, so a huge query value gets the
        # same 422 as any other bad value; headers keep aiohttp's 8 KiB limit.
        handler_args={"max_line_size": 128 * 1024},
    )
    app[keys.CONFIG] = config
    app[keys.SESSION_ENDED] = []
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_media_server)
    app.on_shutdown.append(_close_sockets)
    app.router.add_post("/api/v1/token", sessions.login)
    app.router.add_post("/api/v1/sessions/{access_token_id}", sessions.end_session)
    app.router.add_get("/.well-known/jwks.json", sessions.jwks)
    app.router.add_get("/api/v1/cameras/{camera}/archive/link", archive.archive_link)
    app.router.add_get("/api/v1/downloads", archive.list_downloads)
    app.router.add_get("/api/v1/downloads/{id}", archive.show_download)
    app.router.add_get("/api/v1/wsurl", push.wsurl)
    app.router.add_post("/api/v1/broadcasting/auth", push.broadcasting_auth)
    app.router.add_post("/broadcasting/auth", push.broadcasting_auth)
    app.router.add_get("/archive/download/{id}", files.download_archive)
    app.router.add_get("/ws/app/{app_key}", _websocket)
    app.router.add_get("/api/openapi.json", openapi.openapi_json)
    setup_pages(app)
    return app


async def _websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[keys.HUB].handle(request)
