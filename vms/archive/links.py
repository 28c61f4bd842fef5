"""The seed endpoint's service: which camera, whether footage exists, and the thick-client link."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo

from vms.archive.mediaclient import MediaClient, get_url
from vms.auth import Authenticator, Principal
from vms.dates import utcnow
from vms.db import Database
from vms.models import Camera, Download, Kind, Status, User
from vms.validation import parse_id

# Grants change rarely (by the CLI, in another process); a few seconds of caching spares a
# query on every request, and a revoked grant stops working within that time.
_VISIBLE_TTL = 5.0
_VISIBLE_CACHE_SIZE = 10_000


class CameraNotFound(Exception):
    """The camera does not exist or the caller may not see it (the two look the same)."""


class NoRecording(Exception):
    """The media server has nothing recorded in the range."""


def download_name(camera_name: str, start: datetime, end: datetime, tz: tzinfo) -> str:
    """`Gate, 2026-11-23 10-20-00 - 10-25-00.mp4`; the end date is spelled out if it differs."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    tail = "%H-%M-%S" if local_start.date() == local_end.date() else "%Y-%m-%d %H-%M-%S"
    clean = "".join(ch if ch.isprintable() and ch not in '/\\"' else "_" for ch in camera_name)
    return f"{clean}, {local_start:%Y-%m-%d %H-%M-%S} - {local_end.strftime(tail)}.mp4"


class LinkService:
    """Finds cameras for a caller, checks footage and issues thick-client links."""

    def __init__(
        self,
        db: Database,
        auth: Authenticator,
        media: MediaClient,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._auth = auth
        self._media = media
        self._clock = clock
        self._visible: dict[tuple[int, int], tuple[float, Camera | None]] = {}

    async def camera_for(self, principal: Principal, camera_ref: str) -> Camera:
        """The camera named in the URL if the caller may see it; CameraNotFound otherwise."""
        camera_id = parse_id(camera_ref)
        if camera_id is None:
            raise CameraNotFound
        key = (principal.user.id, camera_id)
        cached = self._visible.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            camera = cached[1]
        else:
            camera = await self._db.visible_camera(principal.user, key[1])
            if len(self._visible) > _VISIBLE_CACHE_SIZE:
                self._visible.clear()
            self._visible[key] = (time.monotonic() + _VISIBLE_TTL, camera)
        if camera is None:
            raise CameraNotFound
        return camera

    async def check_footage(self, camera: Camera, start: datetime, end: datetime) -> None:
        """NoRecording if the camera's media server recorded nothing in [start, end)."""
        if not await self._media.has_recording(camera, start, end):
            raise NoRecording

    def media_link(self, user: User, camera: Camera, start: datetime, end: datetime) -> str:
        """The media server's own download address with a fresh media token for this range."""
        token = self._auth.media_token(camera.path, start, end, self._clock(), user_id=user.id)
        return get_url(camera, start, end, token)

    async def thick_link(
        self, principal: Principal, camera: Camera, start: datetime, end: datetime
    ) -> tuple[Download, str]:
        """Record the request in the history and return it with the link."""
        record = await self._db.create_download(
            kind=Kind.LINK,
            session=principal.session,
            camera=camera,
            range_from=start,
            range_to=end,
            status=Status.READY,
            now=self._clock(),
        )
        return record, self.media_link(principal.user, camera, start, end)
