"""Archive files: on disk or in a bucket, signed expiring URLs, and who is reading them.

By default an archive lives in DATA/archives. With a bucket (`VMS_STORAGE_URL`), DATA/archives
holds only the temporary copy a fetch is checked and its poster decoded from (partial names,
deleted once stored); the finished file and poster are objects of the usual names under the
bucket's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from vms.archive.storage import StorageError
from vms.urls import Urls

if TYPE_CHECKING:
    from vms.archive.objects import Bucket, Upload

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
POSTER_SUFFIX = ".poster.jpg"


class BadSignature(Exception):
    """The URL was not signed by this server for this archive."""


class Expired(Exception):
    """The URL was signed but its time is up."""


def file_name(download_id: int) -> str:
    """The name of a download's finished file in DATA/archives."""
    return f"{int(download_id)}.mp4"


def poster_name(download_id: int) -> str:
    """The name of a ready archive's poster frame in DATA/archives."""
    return f"{int(download_id)}{POSTER_SUFFIX}"


class ArchiveFiles:
    """Names files under DATA/archives (or in `bucket`) and signs the URLs that serve them."""

    def __init__(self, root: Path, urls: Urls, secret: bytes, bucket: Bucket | None = None) -> None:
        self.root = root
        self.bucket = bucket
        self._urls = urls
        self._secret = secret
        self._serving: Counter[int] = Counter()

    def path(self, download_id: int) -> Path:
        """The finished file of a download."""
        return self.root / file_name(download_id)

    def partial_path(self, download_id: int) -> Path:
        """Where a download is written before it is complete."""
        return self.root / f"{int(download_id)}.mp4{PART_SUFFIX}"

    def remove_partials(self) -> int:
        """Delete every partial file (left by a crash); how many there were. Blocking."""
        count = 0
        for path in self.root.glob(f"*{PART_SUFFIX}"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def local_path(self, download_id: int) -> Path:
        """Where a fetch leaves the finished file: the archive itself, or with a bucket the
        copy its poster is made from (a partial name: a crash's leftover goes at the start)."""
        if self.bucket is None:
            return self.path(download_id)
        return self.root / f"{int(download_id)}.copy.mp4{PART_SUFFIX}"

    def local_poster_path(self, download_id: int) -> Path:
        """Where the poster frame is made: its place, or with a bucket a copy to upload."""
        if self.bucket is None:
            return self.poster_path(download_id)
        return self.root / f"{int(download_id)}.copy{POSTER_SUFFIX}{PART_SUFFIX}"

    def upload(self, download_id: int) -> Upload | None:
        """With a bucket, the upload a fetch streams the archive into as it writes its copy."""
        return None if self.bucket is None else self.bucket.upload(file_name(download_id))

    async def store_poster(self, download_id: int) -> None:
        """With a bucket, upload the poster made from the local copy (StorageError)."""
        if self.bucket is not None:
            path = self.local_poster_path(download_id)
            await self.bucket.put_file(poster_name(download_id), path, "image/jpeg")

    async def drop_copy(self, download_id: int) -> None:
        """With a bucket, delete the local copy and poster once they are stored."""
        if self.bucket is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._delete_local, download_id)

    async def remove(self, download_id: int) -> None:
        """Delete a download's file, its poster and any partial, wherever they are."""
        await asyncio.get_running_loop().run_in_executor(None, self._delete_local, download_id)
        if self.bucket is not None:
            try:
                await self.bucket.delete([file_name(download_id), poster_name(download_id)])
            except StorageError as exc:  # its row no longer owns it: the timer's sweep retries
                log.warning("archive %d: %s", download_id, exc)

    def poster_path(self, download_id: int) -> Path:
        """The poster frame (JPEG) of a ready archive."""
        return self.root / poster_name(download_id)

    def _delete_local(self, download_id: int) -> None:
        self.path(download_id).unlink(missing_ok=True)
        self.poster_path(download_id).unlink(missing_ok=True)
        self.partial_path(download_id).unlink(missing_ok=True)
        if self.bucket is not None:
            self.local_path(download_id).unlink(missing_ok=True)
            self.local_poster_path(download_id).unlink(missing_ok=True)

    def exists(self, download_id: int) -> bool:
        """True if the finished file is on disk; with a bucket, taken as there (no request).

        A ready row's object is made before the row says so; one lost since is found by the
        cleanup timer's listing, which marks its archive expired.
        """
        return self.bucket is not None or self.path(download_id).is_file()

    def has_poster(self, download_id: int) -> bool:
        """True if the poster frame is on disk; with a bucket, taken as there (no request)."""
        return self.bucket is not None or self.poster_path(download_id).is_file()

    def _unsigned(self, download_id: int, expires: int) -> str:
        return self._urls.archive_file(download_id, expires)

    def _signature(self, download_id: int, expires: int) -> str:
        message = self._unsigned(download_id, expires).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_url(self, download_id: int, expires: datetime) -> str:
        """A Laravel-style temporary signed URL that stops working at `expires`."""
        stamp = int(expires.timestamp())
        return (
            f"{self._unsigned(download_id, stamp)}&signature={self._signature(download_id, stamp)}"
        )

    def check(
        self, download_id: int, expires: str | None, signature: str | None, now: datetime
    ) -> None:
        """BadSignature unless this server signed exactly this id and expiry; Expired after it."""
        if not expires or not signature or not expires.isdigit() or len(expires) > 12:
            raise BadSignature
        expected = self._signature(download_id, int(expires))
        if not hmac.compare_digest(expected, signature.lower()):
            raise BadSignature
        if int(expires) <= now.timestamp():
            raise Expired

    @contextlib.contextmanager
    def serving(self, download_id: int) -> Iterator[None]:
        """Mark a file as being sent so cleanup leaves it until the transfer ends."""
        self._serving[download_id] += 1
        try:
            yield
        finally:
            self._serving[download_id] -= 1
            if self._serving[download_id] <= 0:
                del self._serving[download_id]

    def busy(self) -> set[int]:
        """Downloads whose files are being sent right now."""
        return set(self._serving)


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def fsync_and_publish(partial: Path, final: Path) -> None:
    """Make `partial` durable and give it its final name atomically."""
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
