"""create_app(config): wiring only; every piece with a lifetime lives in a cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from vms import keys
from vms.api import archive, sessions
from vms.api.errors import api_errors
from vms.archive.links import LinkService
from vms.archive.mediaclient import MediaClient
from vms.auth import Authenticator
from vms.config import Config
from vms.dates import utcnow
from vms.db import Database
from vms.keystore import load_or_create
from vms.validation import ArchiveLinkSchema, DownloadListSchema

log = logging.getLogger(__name__)


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app[keys.KEYSTORE] = load_or_create(config.keys_dir)
    app[keys.DB] = db = await Database.open(config.database_path)
    app[keys.AUTH] = Authenticator(config, db, app[keys.KEYSTORE])
    yield
    await db.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    auth = app[keys.AUTH]
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        app[keys.HTTP] = http
        app[keys.MEDIA] = media = MediaClient(http, lambda path: auth.media_token(path, utcnow()))
        app[keys.LINKS] = LinkService(app[keys.DB], auth, media)
        app[keys.LINK_SCHEMA] = ArchiveLinkSchema(config.tz, config.max_range)
        app[keys.LIST_SCHEMA] = DownloadListSchema(config.tz)
        yield


def create_app(config: Config) -> web.Application:
    """The API application for `config`; start it with web.run_app or a test client."""
    app = web.Application(middlewares=[api_errors], client_max_size=64 * 1024)
    app[keys.CONFIG] = config
    app[keys.SESSION_ENDED] = []
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_services)
    app.router.add_post("/api/v1/token", sessions.login)
    app.router.add_post("/api/v1/sessions/{access_token_id}", sessions.end_session)
    app.router.add_get("/.well-known/jwks.json", sessions.jwks)
    app.router.add_get("/api/v1/cameras/{camera}/archive/link", archive.archive_link)
    app.router.add_get("/api/v1/downloads", archive.list_downloads)
    app.router.add_get("/api/v1/downloads/{id}", archive.show_download)
    return app
