"""`GET /metrics` (Prometheus text format) and the middleware that counts every request."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from vms import appkeys
from vms.archive.fetcher import free_bytes
from vms.auth import Unauthenticated
from vms.metrics import Metrics
from vms.models import Status
from vms.threads import run_blocking

METRICS = web.AppKey("metrics", Metrics)
# Requests that matched no route: one label, never the raw path.
UNMATCHED = "unmatched"
PROBE_TIMEOUT = 2.0


def route_of(request: web.Request) -> str:
    """The route template the request matched (`/api/v1/downloads/{id}`), or `unmatched`."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    return resource.canonical


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer and time it, labelled by its route template."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.config_dict[METRICS]
        route = route_of(request)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.request_duration.labels(route).observe(time.perf_counter() - started)


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def _allowed(request: web.Request) -> bool:
    if _loopback(request.remote):
        return True
    try:
        principal = await request.config_dict[appkeys.AUTH].authenticate(
            request.headers.get("Authorization"), None
        )
    except Unauthenticated:
        return False
    return principal.user.is_admin


async def _probe(http: aiohttp.ClientSession, url: str) -> float:
    try:
        async with http.get(f"{url}/list", ssl=False):
            return 1.0
    except (aiohttp.ClientError, TimeoutError):
        return 0.0


async def _read_state(app: web.Application, metrics: Metrics) -> None:
    db, config, hub = app[appkeys.DB], app[appkeys.CONFIG], app[appkeys.HUB]
    counts = await db.archive_counts()
    for state in Status:
        metrics.archives.labels(state.value).set(counts.get(state, 0))
    try:
        metrics.disk_free.set(await run_blocking(None, free_bytes, config.archives_dir))
    except OSError:
        metrics.disk_free.set(0)
    stats = hub.stats
    metrics.push_connections.set(stats["connections"])
    metrics.sync_published(stats.get("published", 0))
    servers = [server.url for server, _cameras in await db.media_servers()]
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        states = await asyncio.gather(*(_probe(http, url) for url in servers))
    metrics.media_server_up.clear()
    for url, up in zip(servers, states, strict=True):
        metrics.media_server_up.labels(url).set(up)


async def metrics_page(request: web.Request) -> web.Response:
    """GET /metrics: to loopback clients and operator tokens; 403 to anyone else."""
    if not await _allowed(request):
        return web.json_response({"message": "Forbidden."}, status=403)
    metrics = request.config_dict[METRICS]
    await _read_state(request.app, metrics)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = await run_blocking(None, encoder, metrics.registry)
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = content_type
    return response
