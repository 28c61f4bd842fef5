"""Asking for footage: a thick-client link now, or a server-side archive made in the background.

This is the seed endpoint's use case. The same device session asking again for an archive
that is queued, running or on disk gets that archive back (and, when it is ready, the push
again); nothing is ever shared across device sessions, so across users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from vms.archive import events
from vms.archive.events import Publisher
from vms.archive.fetcher import free_bytes
from vms.archive.files import ArchiveFiles
from vms.archive.links import MediaLinks
from vms.archive.mediaclient import MediaClient
from vms.archive.worker import ArchiveWorker
from vms.audit import audit_download
from vms.auth import Principal
from vms.dates import utcnow
from vms.models import THICK_CLIENT, Camera, Download, Kind, Status
from vms.resources import Resources
from vms.store import Store

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


class NotEnoughDisk(Exception):
    """The archive disk is below its free-space floor: no new archives until it is not."""


class InvalidCameras(Exception):
    """Some cameras of a batch cannot be asked for: index in the batch -> why."""

    UNSEEN = "unseen"
    NO_RECORDING = "no recording"

    def __init__(self, problems: dict[int, str]) -> None:
        super().__init__(f"{len(problems)} cameras cannot be asked for")
        self.problems = problems


@dataclass(frozen=True)
class Asked:
    """The outcome of a request: a history record with its link, or a queued archive."""

    download: Download
    link: str | None = None


class ArchiveRequests:
    """Finds the caller's camera, checks for footage, then links or queues."""

    def __init__(
        self,
        db: Store,
        media: MediaClient,
        links: MediaLinks,
        files: ArchiveFiles,
        worker: ArchiveWorker,
        resources: Resources,
        publisher: Publisher,
        *,
        max_pending_per_device: int,
        min_free_disk: int = 0,
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
        self._min_free_disk = min_free_disk
        self._clock = clock
        self._visible: dict[tuple[int, int], tuple[float, Camera | None]] = {}
        # One lock per (user, device): the cap and the de-duplication are decided per device,
        # so devices never wait for each other. A lock lives while someone holds or awaits it.
        self._device_locks: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}

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
        spans = await self._media.recorded(camera.media_server.url, camera.path, start, end)
        if not spans:
            raise NoRecording
        first = spans[0].start
        (asked,) = await self._make(principal, [camera], start, end, client, [first])
        return asked

    async def ask_many(
        self,
        principal: Principal,
        camera_ids: list[int],
        start: datetime,
        end: datetime,
        client: str,
    ) -> list[Asked]:
        """One range of several cameras, all or nothing: InvalidCameras says which cannot be.

        TooManyPending when the device's cap has no room for all of them together.
        """
        cameras: list[Camera] = []
        problems: dict[int, str] = {}
        for index, camera_id in enumerate(camera_ids):
            try:
                cameras.append(await self.camera_for(principal, camera_id))
            except CameraNotFound:
                problems[index] = InvalidCameras.UNSEEN
        if problems:
            raise InvalidCameras(problems)
        found = await asyncio.gather(
            *(
                self._media.recorded(camera.media_server.url, camera.path, start, end)
                for camera in cameras
            )
        )
        problems = {i: InvalidCameras.NO_RECORDING for i, ok in enumerate(found) if not ok}
        if problems:
            raise InvalidCameras(problems)
        firsts = [spans[0].start for spans in found]
        return await self._make(principal, cameras, start, end, client, firsts)

    async def _make(
        self,
        principal: Principal,
        cameras: list[Camera],
        start: datetime,
        end: datetime,
        client: str,
        first_recorded: list[datetime],
    ) -> list[Asked]:
        if client == THICK_CLIENT:
            made = []
            for camera, first in zip(cameras, first_recorded, strict=True):
                record = await self._create(
                    principal, camera, start, end, Kind.LINK, Status.READY, first
                )
                # MediaMTX answers 404 for a start inside a gap: the link starts at the first
                # recorded moment of the range (the record keeps the range asked for).
                audit_download("link.issued", record, principal.user.login,
                               device=record.device, client=client)  # fmt: skip
                made.append(Asked(record, self._links.for_record(record)))
            return made
        return [Asked(d) for d in await self._queue(principal, cameras, start, end)]

    async def _queue(
        self, principal: Principal, cameras: list[Camera], start: datetime, end: datetime
    ) -> list[Download]:
        session = principal.session
        user_id = principal.user.id
        # This process's requests wait in turn here; the store's lock orders other processes'.
        async with (
            self._device_lock(user_id, session.device),
            self._db.device_lock(user_id, session.device),
        ):
            existing: dict[int, Download] = {}
            for camera in cameras:
                found = await self._db.pending_archive(session.id, camera.id, start, end)
                if found is not None and (
                    found.status != Status.READY or self._files.exists(found.id)
                ):
                    existing[camera.id] = found
            new = [camera for camera in cameras if camera.id not in existing]
            pending = await self._db.count_pending(user_id, session.device)
            if new and pending + len(new) > self._max_pending:
                raise TooManyPending
            if new and not await self._disk_has_room():
                raise NotEnoughDisk
            created = {}
            for camera in new:
                created[camera.id] = await self._create(
                    principal, camera, start, end, Kind.ARCHIVE, Status.QUEUED
                )
        for download in existing.values():
            if download.status == Status.READY:
                self._worker.announce(download)
        for download in created.values():
            audit_download("archive.requested", download, principal.user.login,
                           device=download.device, client=download.client)  # fmt: skip
            self._worker.enqueue(download.id)
        return [existing.get(c.id) or created[c.id] for c in cameras]

    @asynccontextmanager
    async def _device_lock(self, user_id: int, device: str) -> AsyncIterator[None]:
        key = (user_id, device)
        lock, users = self._device_locks.get(key) or (asyncio.Lock(), 0)
        self._device_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._device_locks[key]
            if users == 1:
                del self._device_locks[key]
            else:
                self._device_locks[key] = (lock, users - 1)

    async def _disk_has_room(self) -> bool:
        if not self._min_free_disk:
            return True
        loop = asyncio.get_running_loop()
        self._files.root.mkdir(parents=True, exist_ok=True)
        free = await loop.run_in_executor(None, free_bytes, self._files.root)
        return free >= self._min_free_disk

    async def _create(
        self,
        principal: Principal,
        camera: Camera,
        start: datetime,
        end: datetime,
        kind: Kind,
        status: Status,
        recorded_from: datetime | None = None,
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
            recorded_from=recorded_from if recorded_from and recorded_from > start else None,
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
