"""create_app(config): wiring only; every piece with a lifetime lives in a cleanup context.

The root application is the browser surface (pages, HTML errors). Each JSON surface is a
sub-application with its own error middleware (`vms.api.routes`); the embedded media server
is a separate application on its own port with MediaMTX's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aiohttp
from aiohttp import web

from vms import appkeys, health, monitoring, roles, urls
from vms.api import routes
from vms.api.push import wsurl_throttle
from vms.archive.actions import ArchiveActions
from vms.archive.cleanup import cleanup_forever
from vms.archive.fetcher import FetchLimits
from vms.archive.files import ArchiveFiles
from vms.archive.links import MediaLinks
from vms.archive.manifest import sign_manifest
from vms.archive.mediaclient import MediaClient
from vms.archive.requests import ArchiveRequests
from vms.archive.storage import StorageError
from vms.archive.worker import ArchiveWorker, WorkerSettings
from vms.auth import Authenticator
from vms.bootstrap import DEMO_CAMERAS, ensure_demo_cameras, follow_media_port
from vms.config import Config
from vms.dates import utcnow
from vms.foreground import FOREGROUND, Foreground
from vms.keystore import PublishedKeys, open_keystore
from vms.listen import GuardedRunner, Limits, start_site
from vms.logs import AccessLogger, scrub_library_logs
from vms.metrics import Metrics
from vms.preflight import StartupError
from vms.push.hub import Hub
from vms.resources import Resources
from vms.roles import play_role
from vms.sessions import Sessions
from vms.store import open_store
from vms.throttle import ThrottleFactory, local_throttle, redis_throttles
from vms.tls import Tls
from vms.tls import load as load_tls
from vms.validation import ArchiveLinkSchema, DownloadBatchSchema, DownloadListSchema
from vms.web.routes import setup_pages

log = logging.getLogger(__name__)

# Runs once the database is open and before anything is served (the CLI prints the
# first-start operator password here).
StartHook = Callable[[web.Application], Awaitable[None]]


async def _redis(app: web.Application) -> AsyncIterator[None]:
    """With VMS_REDIS_URL, the Redis client, checked first: a Redis that is down stops the
    start before anything else is opened (or the first-start password shown)."""
    config = app[appkeys.CONFIG]
    if not config.redis_url:
        yield
        return
    from vms.push.bus import connect

    client = app[appkeys.REDIS] = await connect(config.redis_url)
    yield
    await client.aclose()


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    app[appkeys.DB] = db = await open_store(config)
    try:
        keystore = app[appkeys.KEYSTORE] = await open_keystore(config, db)
    except BaseException:
        await db.close()
        raise
    app[appkeys.MEDIA_KEYS] = PublishedKeys(keystore)
    app[appkeys.AUTH] = Authenticator(config, db, keystore)
    yield
    await keystore.close()
    await db.close()


def _worker_settings(config: Config) -> WorkerSettings:
    return WorkerSettings(
        concurrency=config.download_concurrency,
        archive_ttl=config.archive_ttl,
        attempts=config.fetch_attempts,
        backoff=config.fetch_backoff,
        limits=FetchLimits(
            read_timeout=config.fetch_read_timeout,
            min_rate=config.fetch_min_rate,
            rate_window=config.fetch_rate_window,
            min_free_disk=config.min_free_disk,
        ),
        lease=config.job_lease,
    )


async def _archive_files(app: web.Application) -> AsyncIterator[None]:
    """Where archives go: DATA/archives, or the bucket of VMS_STORAGE_URL, checked at start."""
    config, keystore = app[appkeys.CONFIG], app[appkeys.KEYSTORE]
    async with contextlib.AsyncExitStack() as stack:
        bucket = None
        if config.storage_url:
            from vms.archive.objects import open_bucket  # the S3 client, loaded only for this

            try:
                bucket = await stack.enter_async_context(
                    open_bucket(config.storage_url, config.s3_endpoint)
                )
            except StorageError as exc:
                raise StartupError(str(exc)) from None
        app[appkeys.FILES] = ArchiveFiles(
            config.archives_dir, app[appkeys.URLS], keystore.url_secret, bucket
        )
        yield


async def _services(app: web.Application) -> AsyncIterator[None]:
    config, db, auth = app[appkeys.CONFIG], app[appkeys.DB], app[appkeys.AUTH]
    keystore = app[appkeys.KEYSTORE]
    hub = app[appkeys.HUB] = Hub(
        keystore.app_key, keystore.app_secret, activity_timeout=config.push_activity_timeout
    )
    throttle: ThrottleFactory = local_throttle
    bus = None
    if appkeys.REDIS in app:  # several processes: push and throttles through Redis
        from vms.push.bus import RedisBus

        bus = app[appkeys.BUS] = RedisBus(app[appkeys.REDIS], hub, keystore.app_key)
        throttle = redis_throttles(app[appkeys.REDIS])
    sessions = app[appkeys.SESSIONS] = Sessions(
        config, db, auth, on_ended=hub.disconnect_session, throttle=throttle
    )
    app[appkeys.WSURL_THROTTLE] = wsurl_throttle(throttle)
    app[appkeys.LINK_SCHEMA] = ArchiveLinkSchema(config.tz, config.max_range)
    app[appkeys.BATCH_SCHEMA] = DownloadBatchSchema(config.tz, config.max_range)
    app[appkeys.LIST_SCHEMA] = DownloadListSchema(config.tz)
    # A link drawn again within a quarter of its token's life shows the same token.
    links = app[appkeys.LINKS] = MediaLinks(auth, reuse=config.media_token_ttl / 4)
    files = app[appkeys.FILES]
    resources = app[appkeys.RESOURCES] = Resources(config.tz, files, links)
    tls = app.get(appkeys.TLS)
    # Fetches from the embedded media server meet the service's own (maybe self-signed) cert.
    connector = aiohttp.TCPConnector(ssl=tls.client()) if tls is not None else None
    async with aiohttp.ClientSession(auto_decompress=False, connector=connector) as http:
        media = MediaClient(http, lambda path, start, end: links.token(path, start, end))
        worker = ArchiveWorker(
            _worker_settings(config),
            db,
            files,
            http,
            media,
            links,
            resources,
            hub,
            lambda claims: sign_manifest(claims, keystore.signing_key, keystore.kid),
            metrics=app[monitoring.METRICS],
        )
        app[appkeys.WORKER] = worker
        requests = app[appkeys.REQUESTS] = ArchiveRequests(
            db,
            media,
            links,
            files,
            worker,
            resources,
            hub,
            max_pending_per_device=config.max_pending_per_device,
            min_free_disk=config.min_free_disk,
        )
        app[appkeys.ACTIONS] = ArchiveActions(db, files, worker)
        hub.on_subscribed = requests.replay
        if bus is not None:
            bus.on_reread = lambda: sessions.reread(hub.session_ids())
            bus.on_ended = lambda _: auth.forget_sessions()
            await bus.start()
        await worker.start()
        cleaner = asyncio.create_task(
            cleanup_forever(db, files, config.cleanup_interval), name="archive-cleanup"
        )
        yield
        cleaner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleaner
        await worker.stop()
        if bus is not None:
            await bus.stop()


async def _media_server(app: web.Application) -> AsyncIterator[None]:
    """The embedded MediaMTX-compatible server on its own port, with the demo cameras."""
    config = app[appkeys.CONFIG]
    if config.media_port == 0:
        yield
        return
    from vms.mediaserver.app import create_media_app
    from vms.mediaserver.demo import DemoCamera, DemoRecorder

    config.recordings_dir.mkdir(parents=True, exist_ok=True)
    media_app = create_media_app(
        config.recordings_dir, app[appkeys.MEDIA_KEYS], public_url=config.media_url
    )
    runner = GuardedRunner(media_app, Limits.of(config, ports=2), access_log_class=AccessLogger)
    await runner.setup()
    sockets = app.get(appkeys.MEDIA_SOCKETS, [])
    tls = app.get(appkeys.TLS)
    await start_site(
        runner, config.host, config.media_port, sockets=sockets,
        ssl_context=tls.server if tls is not None else None,
    )  # fmt: skip
    log.info("embedded media server on %s", config.media_url)
    recorder: asyncio.Task[None] | None = None
    if config.demo_cameras:
        await ensure_demo_cameras(app[appkeys.DB], config, utcnow())
        await follow_media_port(app[appkeys.DB], config, utcnow())
        cameras = [DemoCamera(path=path, name=name) for _, name, path in DEMO_CAMERAS]
        # Six hours of demo footage is about 170 MB a camera; plenty to try the archive with.
        demo = DemoRecorder(config.recordings_dir, cameras, retention=timedelta(hours=6))
        # Of the processes sharing a database, one at a time records the demo footage.
        recorder = asyncio.create_task(
            play_role(app[appkeys.DB], roles.DEMO_RECORDER, demo.run), name="demo-recorder"
        )
    yield
    if recorder is not None:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
    await runner.cleanup()


async def _reread_on_hangup(app: web.Application) -> AsyncIterator[None]:
    """SIGHUP (sent by `user passwd`, `user remove` ...): re-read sessions from the database."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def reread() -> None:
        ended = await app[appkeys.SESSIONS].reread(app[appkeys.HUB].session_ids())
        log.info("SIGHUP: sessions re-read from the database, %d ended", ended)
        if appkeys.BUS in app:  # and the other processes' sockets
            app[appkeys.BUS].reread()

    def start() -> None:
        task = loop.create_task(reread(), name="reread-sessions")
        running.add(task)
        task.add_done_callback(running.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, start)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        yield
        return
    yield
    loop.remove_signal_handler(signal.SIGHUP)
    for task in list(running):
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def _close_sockets(app: web.Application) -> None:
    app[health.SHUTTING_DOWN].set()
    await app[appkeys.HUB].close_all()


async def _websocket(request: web.Request) -> web.StreamResponse:
    return await request.config_dict[appkeys.HUB].handle(request)


def _on_start(hook: StartHook) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        await hook(app)
        yield

    return context


def create_app(
    config: Config, *, on_start: StartHook | None = None, tls: Tls | None = None
) -> web.Application:
    """The service's application for `config`; start it with web.run_app or a test client.

    With TLS on, `tls` is the certificate (`vms.tls.load`); loaded here if not given.
    """
    scrub_library_logs()
    app = web.Application(
        client_max_size=64 * 1024,
        # A request line up to 128 KiB reaches validation, so a huge query value gets the
        # same 422 as any other bad value; headers keep aiohttp's 8 KiB limit.
        handler_args={"max_line_size": 128 * 1024},
        middlewares=[monitoring.count_requests],
    )
    app[appkeys.CONFIG] = config
    app[health.SHUTTING_DOWN] = asyncio.Event()
    app[monitoring.METRICS] = Metrics()
    app[FOREGROUND] = Foreground()
    if tls is None and config.tls_on:
        tls = load_tls(config, utcnow())
    if tls is not None:
        app[appkeys.TLS] = tls
    app.cleanup_ctx.append(_redis)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_archive_files)
    if on_start is not None:
        app.cleanup_ctx.append(_on_start(on_start))
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_media_server)
    app.cleanup_ctx.append(_reread_on_hangup)
    app.on_shutdown.append(_close_sockets)

    surfaces = {
        "/api/": routes.api_surface(),
        "/broadcasting/": routes.broadcasting_surface(),
        "/.well-known/": routes.well_known_surface(),
        "/archive/": routes.files_surface(),
        f"{urls.WS_PATH}/": routes.push_surface(_websocket, "/app/{app_key}"),
        # Pusher's own path, which clients without a path option use (Android, pysher).
        "/app/": routes.push_surface(_websocket, "/{app_key}"),
    }
    for prefix, surface in surfaces.items():
        app.add_subapp(prefix, surface)
    setup_pages(app)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", monitoring.metrics_page)
    named: dict[str, web.AbstractResource] = {}
    for router in (app.router, *(surface.router for surface in surfaces.values())):
        named.update(router.named_resources())
    app[appkeys.URLS] = urls.Urls(config.base_url, named)
    return app
