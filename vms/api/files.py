"""Serving finished archives behind signed, expiring URLs (Range and sendfile by FileResponse)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from vms import keys
from vms.api.errors import json_error
from vms.archive.files import ArchiveFiles, BadSignature, Expired, content_disposition
from vms.archive.links import download_name
from vms.dates import utcnow
from vms.models import Kind, Status
from vms.validation import parse_id

_INVALID = "Invalid signature."
_EXPIRED = "This archive has expired."


async def download_archive(request: web.Request) -> web.StreamResponse:
    """GET /archive/download/{id}?expires&signature: the MP4, whole or a range of it."""
    download_id = parse_id(request.match_info["id"])
    if download_id is None:
        return json_error(403, _INVALID)
    archives = request.app[keys.ARCHIVES]
    try:
        archives.files.check(
            download_id, request.query.get("expires"), request.query.get("signature"), utcnow()
        )
    except BadSignature:
        return json_error(403, _INVALID)
    except Expired:
        return json_error(410, _EXPIRED)
    download = await request.app[keys.DB].download(download_id)
    if download is None or download.kind != Kind.ARCHIVE:
        return json_error(403, _INVALID)
    path = archives.files.path(download_id)
    if download.status != Status.READY or not path.is_file():
        return json_error(410, _EXPIRED)
    name = download_name(
        download.camera_name, download.range_from, download.range_to, request.app[keys.CONFIG].tz
    )
    return _TrackedFileResponse(
        archives.files,
        download_id,
        path,
        headers={
            "Content-Type": "video/mp4",
            "Content-Disposition": content_disposition(name),
            "Cache-Control": "private, no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


class _TrackedFileResponse(web.FileResponse):
    """A FileResponse that tells cleanup the file is being sent until the last byte is out."""

    def __init__(self, files: ArchiveFiles, download_id: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._files = files
        self._download_id = download_id

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        """Send the file (FileResponse sends it all while preparing)."""
        with self._files.serving(self._download_id):
            return await super().prepare(request)
