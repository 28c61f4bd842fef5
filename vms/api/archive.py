"""The seed endpoint, batches of cameras, and the caller's downloads: list, show, remove."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vms import appkeys, urls
from vms.api.errors import ApiError
from vms.api.inputs import authenticated, header_values, parse_id, query_values, read_body
from vms.archive.files import content_disposition
from vms.archive.manifest import MEDIA_TYPE
from vms.archive.requests import (
    CameraNotFound,
    InvalidCameras,
    NoRecording,
)
from vms.models import PENDING, THICK_CLIENT, Download, Kind, Status, User
from vms.pagination import Page
from vms.validation import ValidationFailed

NO_RECORDING = "No recording found between from and to."
DOWNLOAD_NOT_FOUND = "Download not found."
MANIFEST_NOT_READY = "The archive is not ready yet."
NO_MANIFEST = "This download has no manifest."
ARCHIVE_EXPIRED = "This archive has expired."
_LIST_PARAMETERS = ("page", "per_page", "from", "to", "kind")
_KINDS = {"link": (Kind.LINK,), "archive": (Kind.ARCHIVE,), "all": (Kind.LINK, Kind.ARCHIVE)}


async def archive_link(request: web.Request) -> web.Response:
    """GET /api/v1/cameras/{camera}/archive/link: a link now, or an archive made later."""
    app = request.config_dict
    principal = await authenticated(request, device_headers=False)
    requests = app[appkeys.REQUESTS]
    try:  # the camera is bound before its input is validated, as Laravel binds route models
        camera = await requests.camera_for(principal, parse_id(request.match_info["camera"]))
    except CameraNotFound:
        raise ApiError(404, "Camera not found.") from None
    body = await read_body(request)
    values: dict[str, Any] = {k: body[k] for k in ("from", "to") if k in body}
    values.update(query_values(request, ("from", "to")))
    values.update(header_values(request))
    data = app[appkeys.LINK_SCHEMA].validated(values)
    try:
        asked = await requests.ask(
            principal, camera, data["range_from"], data["range_to"], data["client"]
        )
    except NoRecording:
        raise ValidationFailed({"from": [NO_RECORDING]}) from None
    if asked.link is not None:
        return web.json_response({"link": asked.link})
    resource = app[appkeys.RESOURCES].download(asked.download)
    return web.json_response({"status": "queued", "download": resource}, status=202)


async def list_downloads(request: web.Request) -> web.Response:
    """GET /api/v1/downloads: the caller's history records (or archives), newest first."""
    app = request.config_dict
    principal = await authenticated(request)
    data = app[appkeys.LIST_SCHEMA].validated(query_values(request, _LIST_PARAMETERS))
    number, per_page = data.get("page", 1), data.get("per_page", 25)
    rows, total = await app[appkeys.DB].list_downloads(
        user_id=principal.user.id,
        kinds=_KINDS[data.get("kind", "link")],
        created_from=data.get("created_from"),
        created_to=data.get("created_to"),
        limit=per_page,
        offset=(number - 1) * per_page,
    )
    page = Page(number, total, per_page)
    links = app[appkeys.URLS]
    kept = {k: v for k, v in request.query.items() if k in _LIST_PARAMETERS and k != "page"}

    def page_url(page_number: int | None) -> str | None:
        if page_number is None:
            return None
        return links.absolute(urls.DOWNLOADS, {**kept, "page": str(page_number)})

    resources = app[appkeys.RESOURCES]
    return web.json_response(
        {
            "data": [resources.download(row) for row in rows],
            "links": {
                "first": page_url(1),
                "last": page_url(page.last),
                "prev": page_url(page.previous),
                "next": page_url(page.next),
            },
            "meta": {
                "current_page": page.number,
                "from": page.first_index if rows else None,
                "last_page": page.last,
                "path": links.absolute(urls.DOWNLOADS),
                "per_page": per_page,
                "to": page.last_index(len(rows)) if rows else None,
                "total": total,
            },
        }
    )


async def show_download(request: web.Request) -> web.Response:
    """GET /api/v1/downloads/{id}: one of the caller's own downloads."""
    app = request.config_dict
    principal = await authenticated(request)
    download_id = parse_id(request.match_info["id"])
    download = await app[appkeys.DB].download(download_id) if download_id else None
    if download is None or download.user_id != principal.user.id:
        raise ApiError(404, DOWNLOAD_NOT_FOUND)
    return web.json_response({"data": app[appkeys.RESOURCES].download(download)})


async def show_manifest(request: web.Request) -> web.Response:
    """GET /api/v1/downloads/{id}/manifest: the signed manifest of a ready archive.

    The caller's own, or anyone's for an operator; 409 while the archive is being made (its
    digest is not known yet), 404 for a download that never became a file, 410 once the file
    is gone.
    """
    app = request.config_dict
    principal = await authenticated(request)
    download_id = parse_id(request.match_info["id"])
    db = app[appkeys.DB]
    download = await db.download(download_id) if download_id else None
    user = principal.user
    if download is None or not (user.is_admin or download.user_id == user.id):
        raise ApiError(404, DOWNLOAD_NOT_FOUND)
    if download.kind == Kind.ARCHIVE and download.status in PENDING:
        raise ApiError(409, MANIFEST_NOT_READY)
    resources = app[appkeys.RESOURCES]
    if download.kind == Kind.ARCHIVE and resources.facts(download).status == Status.EXPIRED:
        # Served while its file is: a retired key need outlive only the archives it signed.
        raise ApiError(410, ARCHIVE_EXPIRED)
    manifest = await db.manifest(download.id) if download.kind == Kind.ARCHIVE else None
    if manifest is None:
        raise ApiError(404, NO_MANIFEST)
    name = resources.name(download) + ".jws"
    return web.Response(
        text=manifest,
        content_type=MEDIA_TYPE,
        headers={"Content-Disposition": content_disposition(name)},
    )


async def list_cameras(request: web.Request) -> web.Response:
    """GET /api/v1/cameras: the cameras the caller may see, by id."""
    app = request.config_dict
    principal = await authenticated(request)
    cameras = await app[appkeys.DB].visible_cameras(principal.user)
    return web.json_response({"data": [{"id": c.id, "name": c.name} for c in cameras]})


async def ask_batch(request: web.Request) -> web.Response:
    """POST /api/v1/downloads: one range of up to 50 cameras, all or nothing."""
    app = request.config_dict
    principal = await authenticated(request, device_headers=False)
    body = await read_body(request)
    values: dict[str, Any] = {k: body[k] for k in ("from", "to") if k in body}
    if "ids" in body or "ids[]" in body:
        values["ids"] = body["ids"] if "ids" in body else body["ids[]"]
    values.update(header_values(request))
    data = app[appkeys.BATCH_SCHEMA].validated(values)
    try:
        made = await app[appkeys.REQUESTS].ask_many(
            principal, data["ids"], data["range_from"], data["range_to"], data["client"]
        )
    except InvalidCameras as exc:
        raise ValidationFailed(
            {f"ids.{i}": [_camera_problem(i, why)] for i, why in sorted(exc.problems.items())}
        ) from None
    resources = app[appkeys.RESOURCES]
    items = [resources.download(asked.download) for asked in made]
    if data["client"] == THICK_CLIENT:
        return web.json_response({"data": items})
    return web.json_response({"status": "queued", "data": items}, status=202)


def _camera_problem(index: int, why: str) -> str:
    if why == InvalidCameras.NO_RECORDING:
        return NO_RECORDING
    return f"The selected ids.{index} is invalid."


async def remove_download(request: web.Request) -> web.Response:
    """DELETE /api/v1/downloads/{id}: cancel a queued or running archive, or delete its file."""
    app = request.config_dict
    principal = await authenticated(request)
    download = await _act(request, principal.user, app[appkeys.ACTIONS].remove)
    return web.json_response({"data": app[appkeys.RESOURCES].download(download)})


async def repeat_download(request: web.Request) -> web.Response:
    """POST /api/admin/v1/downloads/{id}/repeat: the same archive again (operators only)."""
    app = request.config_dict
    principal = await authenticated(request)
    if not principal.user.is_admin:
        raise ApiError(403)
    again = await _act(request, principal.user, app[appkeys.ACTIONS].repeat)
    resource = app[appkeys.RESOURCES].download(again)
    return web.json_response({"status": "queued", "download": resource}, status=202)


async def _act(
    request: web.Request, user: User, action: Callable[[User, int], Awaitable[Download]]
) -> Download:
    """Run an action on the download named in the URL: 404 if it is none of the caller's."""
    download_id = parse_id(request.match_info["id"])
    if download_id is None:
        raise ApiError(404, DOWNLOAD_NOT_FOUND)
    return await action(user, download_id)
