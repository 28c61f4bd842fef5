"""Serving finished archives behind signed, expiring URLs (Range and sendfile by FileResponse)."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ETAG_ANY, ETag
from multidict import CIMultiDict

from vms import appkeys
from vms.api.errors import json_error
from vms.api.inputs import parse_id
from vms.archive.digests import etag, is_sha256, repr_digest
from vms.archive.files import ArchiveFiles, BadSignature, Expired, content_disposition
from vms.dates import utcnow
from vms.models import Kind, Status
from vms.web.errors import archive_link_page, prefers_html

_INVALID = "Invalid signature."
_EXPIRED = "This archive has expired."
_CONDITIONALS = (hdrs.IF_MATCH, hdrs.IF_NONE_MATCH, hdrs.IF_RANGE)


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
    headers = {
        "Content-Type": "video/mp4",
        "Content-Disposition": content_disposition(app[appkeys.RESOURCES].name(download)),
        "Cache-Control": "private, no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    if download.sha256 is None or not is_sha256(download.sha256):
        # Made before digests were kept: aiohttp's own validators still work.
        return _TrackedFileResponse(files, download_id, None, path, headers=headers)
    tag = headers[hdrs.ETAG] = etag(download.sha256)
    headers["Repr-Digest"] = repr_digest(download.sha256)
    refused, forwarded = _preconditions(request, tag)
    if refused == 412:
        return json_error(412, "Precondition Failed.")
    if refused == 304:
        del headers["Content-Type"], headers["Content-Disposition"]
        return web.Response(status=304, headers=headers)
    return _TrackedFileResponse(files, download_id, forwarded, path, headers=headers)


def _matches(tag: str, tags: tuple[ETag, ...], *, weak: bool) -> bool:
    if len(tags) == 1 and tags[0].value == ETAG_ANY:
        return True
    return any(f'"{t.value}"' == tag for t in tags if weak or not t.is_weak)


def _preconditions(request: web.Request, tag: str) -> tuple[int | None, CIMultiDict[str]]:
    """RFC 9110's preconditions against the digest's ETag: 412, 304, or the headers to serve.

    aiohttp's FileResponse would compare with its own mtime-based tag, so the conditional
    headers are settled here and the file is served as if they had not been sent. A Range
    survives an If-Range only if it names this exact strong tag (a date is not a strong
    validator here: the whole file is the safe answer).
    """
    headers = CIMultiDict(request.headers)
    if request.if_match is not None:
        if not _matches(tag, request.if_match, weak=False):
            return 412, headers
        headers.popall(hdrs.IF_UNMODIFIED_SINCE, None)
    if request.if_none_match is not None:
        if _matches(tag, request.if_none_match, weak=True):
            return 304, headers
        headers.popall(hdrs.IF_MODIFIED_SINCE, None)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() != tag:
        headers.popall(hdrs.RANGE, None)
    for name in _CONDITIONALS:
        headers.popall(name, None)
    return None, headers


def _refused(request: web.Request, status: int, message: str) -> web.Response:
    """JSON for apps; a page for a person who opened the link in a browser."""
    if prefers_html(request.headers.get("Accept", "")):
        return archive_link_page(request, status)
    return json_error(status, message)


class _TrackedFileResponse(web.FileResponse):
    """A FileResponse that tells cleanup the file is being sent until the last byte is out.

    Given `forwarded` headers (the preconditions already settled against the digest's ETag),
    it serves the request as if it carried those, and keeps the ETag it was given.
    """

    def __init__(
        self,
        files: ArchiveFiles,
        download_id: int,
        forwarded: CIMultiDict[str] | None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._files = files
        self._download_id = download_id
        self._forwarded = forwarded

    @property
    def etag(self) -> ETag | None:
        """The entity tag sent (the digest's, when there is one)."""
        return super().etag

    @etag.setter
    def etag(self, value: ETag | int | str | None) -> None:
        # FileResponse sets its mtime-based tag while preparing; the digest's one stays.
        if self._forwarded is None:
            web.FileResponse.etag.fset(self, value)  # type: ignore[attr-defined]

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        """Send the file (FileResponse sends it all while preparing)."""
        if self._forwarded is not None:
            request = request.clone(headers=self._forwarded)
        with self._files.serving(self._download_id):
            return await super().prepare(request)
