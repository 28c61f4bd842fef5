"""Acting on archives already asked for: cancel or delete one, or (operators) ask again.

Cancelling stops the fetch within a second and removes its partial file; deleting a ready
archive removes its file at once, so its signed link answers 410. Both are idempotent: an
archive already cancelled, failed or expired is answered as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from vms.archive.files import ArchiveFiles
from vms.archive.worker import ArchiveWorker
from vms.audit import audit_download
from vms.dates import utcnow
from vms.models import PENDING, Download, Kind, Status, User
from vms.store import Store

log = logging.getLogger(__name__)

CANCELLED_MESSAGE = "Cancelled."


class DownloadNotFound(Exception):
    """No such download, or not the caller's (the two look the same)."""


class NotAllowed(Exception):
    """The caller may see the download but not do this to it."""


def _visible(user: User, download: Download | None) -> Download:
    if download is None or not (user.is_admin or download.user_id == user.id):
        raise DownloadNotFound
    return download


class ArchiveActions:
    """Cancel, delete and repeat, each leaving the row, the file and the device in step."""

    def __init__(
        self,
        db: Store,
        files: ArchiveFiles,
        worker: ArchiveWorker,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._files = files
        self._worker = worker
        self._clock = clock
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    async def remove(self, user: User, download_id: int, *, cancel_only: bool = False) -> Download:
        """Cancel a queued or running archive, or delete a ready one's file.

        With `cancel_only` (a Cancel button) an archive that is ready by now is left as it is.
        """
        download = _visible(user, await self._db.download(download_id))
        if download.kind != Kind.ARCHIVE:
            raise NotAllowed  # a history record is kept
        # One action at a time per archive: a double click cancels once and pushes once.
        async with self._one_at_a_time(download_id):
            return await self._remove(user, download_id, cancel_only)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, download_id: int) -> AsyncIterator[None]:
        lock, holders = self._locks.get(download_id, (asyncio.Lock(), 0))
        self._locks[download_id] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[download_id]
            if holders == 1:
                del self._locks[download_id]
            else:
                self._locks[download_id] = (lock, holders - 1)

    async def _remove(self, user: User, download_id: int, cancel_only: bool) -> Download:
        download = _visible(user, await self._db.download(download_id))
        if download.status in PENDING:
            await self._worker.cancel(download_id)
            cancelled = await self._db.update_download(
                download_id,
                self._clock(),
                expect=PENDING,
                status=Status.CANCELLED,
                message=CANCELLED_MESSAGE,
                progress=0,
            )
            if cancelled is not None and cancelled.status == Status.CANCELLED:
                await self._delete_files(download_id)
                self._worker.metrics.job_finished("cancelled")
                audit_download("archive.cancelled", cancelled, by=user.login)
                self._worker.announce(cancelled)
                return cancelled
            # It became ready while being stopped: delete it as a ready one.
            download = _visible(user, await self._db.download(download_id))
        if download.status == Status.READY and not cancel_only:
            await self._delete_files(download_id)
            expired = await self._db.update_download(
                download_id, self._clock(), expect={Status.READY}, status=Status.EXPIRED
            )
            audit_download("archive.deleted", download, by=user.login)
            return _visible(user, expired)
        return download

    async def _delete_files(self, download_id: int) -> None:
        await self._files.remove(download_id)

    async def repeat(self, operator: User, download_id: int) -> Download:
        """A new archive of the same camera and range, for the original's user and device."""
        if not operator.is_admin:
            raise NotAllowed
        original = await self._db.download(download_id)
        if original is None:
            raise DownloadNotFound
        if original.kind != Kind.ARCHIVE:
            raise NotAllowed
        session = await self._db.session(original.session_id)
        owner = await self._db.user(original.user_id)
        camera = await self._db.camera(original.camera_id)
        if session is None or owner is None or camera is None:
            raise DownloadNotFound
        again = await self._db.create_download(
            kind=Kind.ARCHIVE,
            user=owner,
            session=session,
            camera=camera,
            range_from=original.range_from,
            range_to=original.range_to,
            status=Status.QUEUED,
            now=self._clock(),
        )
        audit_download("archive.requested", again, repeat_of=download_id, by=operator.login)
        self._worker.enqueue(again.id)
        return again
