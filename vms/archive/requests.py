"""Asking for footage: a thick-client link now, or a server-side archive made in the background.

This is the seed endpoint's use case. The same device session asking again for an archive
that is queued, running or on disk gets that archive back (and, when it is ready, the push
again); nothing is ever shared across device sessions, so across users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vms.archive import events
from vms.archive.events import Publisher
from vms.archive.files import ArchiveFiles
from vms.archive.links import MediaLinks
from vms.archive.mediaclient import MediaClient
from vms.archive.worker import ArchiveWorker
from vms.auth import Principal
from vms.dates import utcnow
from vms.models import THICK_CLIENT, Camera, Download, Kind, Status
from vms.resources import Resources
from vms.store import Database

# Grants change rarely (by the CLI, in another process); a few seconds of caching spares a
# query on every request, and a revoked grant stops working within that time.
_VISIBLE_TTL = 5.0
_VISIBLE_CACHE_SIZE = 10_000


class CameraNotFound(Exception):
    """The camera does not exist or the caller may not see it (the two look the same)."""


class NoRecording(Exception):
    """The media server has nothing recorded in the range."""


class TooManyPending(Exception):
    """The device already has as many archives queued or running as it may."""


@dataclass(frozen=True)
class Asked:
    """The outcome of a request: a history record with its link, or a queued archive."""

    download: Download
    link: str | None = None


class ArchiveRequests:
    """Finds the caller's camera, checks for footage, then links or queues."""

    def __init__(
        self,
        db: Database,
        media: MediaClient,
        links: MediaLinks,
        files: ArchiveFiles,
        worker: ArchiveWorker,
        resources: Resources,
        publisher: Publisher,
        *,
        max_pending_per_device: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._media = media
        self._links = links
        self._files = files
        self._worker = worker
        self._resources = resources
        self._publisher = publisher
        self._max_pending = max_pending_per_device
        self._clock = clock
        self._visible: dict[tuple[int, int], tuple[float, Camera | None]] = {}
        self._lock = asyncio.Lock()

    async def camera_for(self, principal: Principal, camera_id: int | None) -> Camera:
        """The camera if the caller may see it; CameraNotFound otherwise."""
        if camera_id is None:
            raise CameraNotFound
        key = (principal.user.id, camera_id)
        cached = self._visible.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            camera = cached[1]
        else:
            camera = await self._db.visible_camera(principal.user, camera_id)
            if len(self._visible) > _VISIBLE_CACHE_SIZE:
                self._visible.clear()
            self._visible[key] = (time.monotonic() + _VISIBLE_TTL, camera)
        if camera is None:
            raise CameraNotFound
        return camera

    async def ask(
        self, principal: Principal, camera: Camera, start: datetime, end: datetime, client: str
    ) -> Asked:
        """A link for the thick client, an archive for everyone else; NoRecording if empty.

        MediaUnavailable and TooManyPending pass through to the caller.
        """
        if not await self._media.has_recording(camera, start, end):
            raise NoRecording
        if client == THICK_CLIENT:
            record = await self._create(principal, camera, start, end, Kind.LINK, Status.READY)
            return Asked(record, self._links.for_camera(principal.user.id, camera, start, end))
        return Asked(await self._queue(principal, camera, start, end))

    async def _queue(
        self, principal: Principal, camera: Camera, start: datetime, end: datetime
    ) -> Download:
        session = principal.session
        async with self._lock:
            existing = await self._db.pending_archive(session.id, camera.id, start, end)
            if existing is not None and (
                existing.status != Status.READY or self._files.exists(existing.id)
            ):
                if existing.status == Status.READY:
                    self._worker.announce(existing)
                return existing
            pending = await self._db.count_pending(principal.user.id, session.device)
            if pending >= self._max_pending:
                raise TooManyPending
            download = await self._create(
                principal, camera, start, end, Kind.ARCHIVE, Status.QUEUED
            )
        self._worker.enqueue(download.id)
        return download

    async def _create(
        self,
        principal: Principal,
        camera: Camera,
        start: datetime,
        end: datetime,
        kind: Kind,
        status: Status,
    ) -> Download:
        return await self._db.create_download(
            kind=kind,
            user=principal.user,
            session=principal.session,
            camera=camera,
            range_from=start,
            range_to=end,
            status=status,
            now=self._clock(),
        )

    async def replay(self, socket_id: str, channel: str) -> None:
        """A device subscribed: send it the `archive_generated` of archives still on disk."""
        session_id = events.session_of(channel)
        if session_id is None:
            return
        for download in await self._db.ready_archives_for_session(session_id):
            if self._files.exists(download.id):
                payload = events.archive_generated(self._resources.download(download), None)
                self._publisher.send_to_socket(socket_id, channel, events.EVENT, payload)
