"""Serving finished archives behind signed, expiring URLs (Range and sendfile by FileResponse)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from vms import appkeys
from vms.api.errors import json_error
from vms.api.inputs import parse_id
from vms.archive.files import ArchiveFiles, BadSignature, Expired, content_disposition
from vms.dates import utcnow
from vms.models import Kind, Status
from vms.web.errors import archive_link_page, prefers_html

_INVALID = "Invalid signature."
_EXPIRED = "This archive has expired."


async def download_archive(request: web.Request) -> web.StreamResponse:
    """GET /archive/download/{id}?expires&signature: the MP4, whole or a range of it."""
    app = request.config_dict
    download_id = parse_id(request.match_info["id"])
    if download_id is None:
        return _refused(request, 403, _INVALID)
    files = app[appkeys.FILES]
    try:
        files.check(
            download_id, request.query.get("expires"), request.query.get("signature"), utcnow()
        )
    except BadSignature:
        return _refused(request, 403, _INVALID)
    except Expired:
        return _refused(request, 410, _EXPIRED)
    download = await app[appkeys.DB].download(download_id)
    if download is None or download.kind != Kind.ARCHIVE:
        return _refused(request, 403, _INVALID)
    path = files.path(download_id)
    if download.status != Status.READY or not path.is_file():
        return _refused(request, 410, _EXPIRED)
    return _TrackedFileResponse(
        files,
        download_id,
        path,
        headers={
            "Content-Type": "video/mp4",
            "Content-Disposition": content_disposition(app[appkeys.RESOURCES].name(download)),
            "Cache-Control": "private, no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _refused(request: web.Request, status: int, message: str) -> web.Response:
    """JSON for apps; a page for a person who opened the link in a browser."""
    if prefers_html(request.headers.get("Accept", "")):
        return archive_link_page(request, status)
    return json_error(status, message)


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
