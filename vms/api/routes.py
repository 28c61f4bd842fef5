"""The JSON surfaces as aiohttp sub-applications, each answering every error in Laravel's shape.

Mounted by `vms.app`: `/api`, `/broadcasting`, `/.well-known`, `/archive` (files) and `/ws`
(push). An unknown path or method under any of these prefixes is a JSON 404 or 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from vms import asyncapi, openapi, urls
from vms.api import archive, files, mediamtx, push, sessions
from vms.api.errors import api_errors
from vms.foreground import api_first

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_surface(routes: list[web.RouteDef], *, foreground: bool = False) -> web.Application:
    """A sub-application whose every answer, errors included, is Laravel JSON.

    A `foreground` surface's requests go before a big page being drawn (`vms.foreground`).
    """
    middlewares = [api_first, api_errors] if foreground else [api_errors]
    surface = web.Application(middlewares=middlewares)
    surface.add_routes(routes)
    return surface


def api_surface() -> web.Application:
    """Everything under /api."""
    return json_surface(
        [
            web.post("/v1/token", sessions.login, name=urls.LOGIN_API),
            web.post("/v1/sessions/{access_token_id}", sessions.end_session),
            web.get("/v1/cameras/{camera}/archive/link", archive.archive_link),
            web.get("/v1/cameras", archive.list_cameras),
            web.get("/v1/downloads", archive.list_downloads, name=urls.DOWNLOADS),
            web.post("/v1/downloads", archive.ask_batch),
            web.get("/v1/downloads/{id}", archive.show_download),
            web.get("/v1/downloads/{id}/manifest", archive.show_manifest),
            web.delete("/v1/downloads/{id}", archive.remove_download),
            web.post("/admin/v1/downloads/{id}/repeat", archive.repeat_download),
            web.post("/v1/mediamtx/auth", mediamtx.mediamtx_auth),
            web.get("/v1/wsurl", push.wsurl),
            web.post("/v1/broadcasting/auth", push.broadcasting_auth),
            web.get("/openapi.json", openapi.openapi_json),
            web.get("/asyncapi.json", asyncapi.asyncapi_json),
        ],
        foreground=True,
    )


def broadcasting_surface() -> web.Application:
    """/broadcasting/auth, where Laravel Echo posts by default."""
    return json_surface([web.post("/auth", push.broadcasting_auth)])


def well_known_surface() -> web.Application:
    """/.well-known: the public keys tokens are verified with."""
    return json_surface([web.get("/jwks.json", sessions.jwks)])


def files_surface() -> web.Application:
    """/archive: finished archives behind signed URLs."""
    return json_surface([web.get("/download/{id}", files.download_archive, name=urls.ARCHIVE_FILE)])


def push_surface(websocket: Handler, path: str) -> web.Application:
    """The Pusher protocol endpoint: `/ws/app/{app_key}` and `/app/{app_key}`."""
    return json_surface([web.get(path, websocket)])
