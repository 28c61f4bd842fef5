"""Serving finished archives behind signed, expiring URLs (Range and sendfile by FileResponse).

With a bucket, the signed URL answers a redirect to a presigned GET that lives no longer than
the archive (S3 serves Range and the same Content-Type and file name), or, with
VMS_STORAGE_PROXY, streams the object itself with the Range passed through.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ETAG_ANY, ETag
from multidict import CIMultiDict

from vms import appkeys
from vms.api.errors import json_error
from vms.api.inputs import parse_id
from vms.archive.digests import etag, is_sha256, repr_digest
from vms.archive.files import (
    ArchiveFiles,
    BadSignature,
    Expired,
    content_disposition,
    file_name,
)
from vms.archive.storage import NotStored, RangeNotSatisfiable, StorageError
from vms.dates import utcnow
from vms.models import Kind, Status
from vms.web.errors import archive_link_page, prefers_html

if TYPE_CHECKING:
    from vms.archive.objects import Bucket

log = logging.getLogger(__name__)

_INVALID = "Invalid signature."
_UNAVAILABLE = "The archive storage could not be reached."
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
    if download.status != Status.READY or (files.bucket is None and not path.is_file()):
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
        if files.bucket is not None:
            return await _stored(request, files, download_id, file_name(download_id),
                                 headers, download.expires_at, None)  # fmt: skip
        return _TrackedFileResponse(files, download_id, None, path, headers=headers)
    tag = headers[hdrs.ETAG] = etag(download.sha256)
    headers["Repr-Digest"] = repr_digest(download.sha256)
    refused, forwarded = _preconditions(request, tag)
    if refused == 412:
        return json_error(412, "Precondition Failed.")
    if refused == 304:
        del headers["Content-Type"], headers["Content-Disposition"]
        return web.Response(status=304, headers=headers)
    if files.bucket is not None:
        return await _stored(request, files, download_id, file_name(download_id),
                             headers, download.expires_at, forwarded)  # fmt: skip
    return _TrackedFileResponse(files, download_id, forwarded, path, headers=headers)


async def _stored(
    request: web.Request,
    files: ArchiveFiles,
    download_id: int,
    name: str,
    headers: dict[str, str],
    until: datetime | None,
    forwarded: CIMultiDict[str] | None,
) -> web.StreamResponse:
    """An archive in the bucket: redirected to a presigned GET, or streamed by proxy."""
    assert files.bucket is not None
    if request.config_dict[appkeys.CONFIG].storage_proxy:
        return await stored_object(request, files, download_id, name, headers, forwarded)
    signed = int(request.query.get("expires", "0"))
    return await presigned_redirect(files.bucket, name, headers, until, signed)


async def presigned_redirect(
    bucket: Bucket,
    name: str,
    headers: dict[str, str],
    until: datetime | None,
    signed: int | None = None,
) -> web.StreamResponse:
    """307 to a presigned GET of `name`, living until the archive expires (at most)."""
    now = utcnow().timestamp()
    ends = [moment for moment in (until.timestamp() if until else None, signed) if moment]
    seconds = int(min(ends) - now) if ends else 3600
    if seconds <= 0:
        return json_error(410, _EXPIRED)
    location = await bucket.presigned_get(
        name,
        seconds,
        content_type=headers["Content-Type"],
        disposition=headers.get("Content-Disposition"),
    )
    kept = {k: v for k, v in headers.items() if k not in ("Content-Type", "Content-Disposition")}
    return web.Response(status=307, headers={**kept, hdrs.LOCATION: location})


async def stored_object(
    request: web.Request,
    files: ArchiveFiles,
    download_id: int,
    name: str,
    headers: dict[str, str],
    forwarded: CIMultiDict[str] | None,
) -> web.StreamResponse:
    """Stream an object of the bucket, whole or the asked range; memory bounded by the socket.

    `forwarded` are the request's headers with the preconditions settled (None: use them as
    sent); only its Range reaches the bucket.
    """
    bucket = files.bucket
    assert bucket is not None
    byte_range = (forwarded if forwarded is not None else request.headers).get(hdrs.RANGE)
    if byte_range is not None and not byte_range.strip().startswith("bytes="):
        byte_range = None
    response = web.StreamResponse(headers=headers)
    response.headers[hdrs.ACCEPT_RANGES] = "bytes"
    try:
        if request.method == hdrs.METH_HEAD:
            size = await bucket.head(name)
            if size is None:
                return _refused(request, 410, _EXPIRED)
            response.content_length = size
            await response.prepare(request)
            return response
        async with bucket.reading(name, byte_range) as reading:
            if reading.content_range is not None:
                response.set_status(206)
                response.headers[hdrs.CONTENT_RANGE] = reading.content_range
            response.content_length = reading.length
            with files.serving(download_id):
                await response.prepare(request)
                async for chunk in reading.chunks:
                    await response.write(chunk)
                await response.write_eof()
    except NotStored:
        return _refused(request, 410, _EXPIRED)
    except RangeNotSatisfiable:
        size = None
        with contextlib.suppress(StorageError):
            size = await bucket.head(name)
        return web.Response(status=416, headers={hdrs.CONTENT_RANGE: f"bytes */{size or 0}"})
    except StorageError as exc:
        log.warning("serving %s: %s", name, exc)
        if response.prepared:  # the status is sent: only a cut connection tells the client
            response.force_close()
            return response
        return json_error(503, _UNAVAILABLE)
    return response


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
