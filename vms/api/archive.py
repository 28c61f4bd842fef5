"""The seed endpoint and the archive download list."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from vms import keys
from vms.api.errors import ApiError
from vms.api.sessions import authenticated, read_body
from vms.archive.jobs import TooManyPending
from vms.archive.links import CameraNotFound, NoRecording
from vms.archive.mediaclient import MediaUnavailable
from vms.auth import Principal
from vms.models import THICK_CLIENT, Download, Kind
from vms.resources import download_resource
from vms.validation import ValidationFailed, header_values, parse_id, query_values

_NO_RECORDING = "No recording found between from and to."
# A queued archive takes tens of seconds; asking again sooner is pointless.
_PENDING_RETRY_AFTER = 30


async def archive_link(request: web.Request) -> web.Response:
    """GET /api/v1/cameras/{camera}/archive/link: a link now, or an archive made later."""
    principal = await authenticated(request, device_headers=False)
    links = request.app[keys.LINKS]
    try:
        camera = await links.camera_for(principal, request.match_info["camera"])
    except CameraNotFound:
        raise ApiError(404, "Camera not found.") from None
    body = await read_body(request)
    values: dict[str, Any] = {k: body[k] for k in ("from", "to") if k in body}
    values.update(query_values(request, ("from", "to")))
    values.update(header_values(request))
    data = request.app[keys.LINK_SCHEMA].validated(values)
    start, end = data["range_from"], data["range_to"]
    try:
        await links.check_footage(camera, start, end)
    except NoRecording:
        raise ValidationFailed({"from": [_NO_RECORDING]}) from None
    except MediaUnavailable:
        raise ApiError(502, "The camera's media server is unavailable.") from None
    if data["client"] == THICK_CLIENT:
        _record, link = await links.thick_link(principal, camera, start, end)
        return web.json_response({"link": link})
    try:
        download = await request.app[keys.ARCHIVES].request(principal, camera, start, end)
    except TooManyPending:
        raise ApiError(429, retry_after=_PENDING_RETRY_AFTER) from None
    return web.json_response(
        {"status": "queued", "download": await _resource(request, principal, download)},
        status=202,
    )


async def _resource(
    request: web.Request, principal: Principal, download: Download
) -> dict[str, Any]:
    """DOWNLOAD for one record, with a working URL when there is one to give."""
    config = request.app[keys.CONFIG]
    if download.kind == Kind.LINK:
        camera = await request.app[keys.DB].visible_camera(principal.user, download.camera_id)
        url = (
            request.app[keys.LINKS].media_link(
                principal.user, camera, download.range_from, download.range_to
            )
            if camera
            else None
        )
        return download_resource(download, config.tz, url=url, is_file_exists=False)
    archives = request.app[keys.ARCHIVES]
    return download_resource(
        download,
        config.tz,
        url=archives.signed_url(download),
        is_file_exists=archives.file_exists(download),
    )


async def list_downloads(request: web.Request) -> web.Response:
    """GET /api/v1/downloads: the caller's history records, newest first, paginated."""
    principal = await authenticated(request)
    names = ("page", "per_page", "from", "to")
    data = request.app[keys.LIST_SCHEMA].validated(query_values(request, names))
    page, per_page = data.get("page", 1), data.get("per_page", 25)
    rows, total = await request.app[keys.DB].list_downloads(
        user_id=principal.user.id,
        kinds=(Kind.LINK,),
        created_from=data.get("created_from"),
        created_to=data.get("created_to"),
        limit=per_page,
        offset=(page - 1) * per_page,
    )
    last_page = max(1, math.ceil(total / per_page))
    path = f"{request.app[keys.CONFIG].base_url}/api/v1/downloads"
    kept = {k: v for k, v in request.query.items() if k in names and k != "page"}

    def page_url(number: int) -> str:
        return f"{path}?{urlencode({**kept, 'page': number})}"

    first_index = (page - 1) * per_page + 1
    return web.json_response(
        {
            "data": [await _resource(request, principal, row) for row in rows],
            "links": {
                "first": page_url(1),
                "last": page_url(last_page),
                "prev": page_url(page - 1) if page > 1 else None,
                "next": page_url(page + 1) if page < last_page else None,
            },
            "meta": {
                "current_page": page,
                "from": first_index if rows else None,
                "last_page": last_page,
                "path": path,
                "per_page": per_page,
                "to": first_index + len(rows) - 1 if rows else None,
                "total": total,
            },
        }
    )


async def show_download(request: web.Request) -> web.Response:
    """GET /api/v1/downloads/{id}: one of the caller's own downloads."""
    principal = await authenticated(request)
    download_id = parse_id(request.match_info["id"])
    download = await request.app[keys.DB].download(download_id) if download_id else None
    if download is None or download.user_id != principal.user.id:
        raise ApiError(404, "Download not found.")
    return web.json_response({"data": await _resource(request, principal, download)})
