"""Links to footage on a camera's media server, each with a media token for that range only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vms.auth import Authenticator
from vms.dates import utcnow
from vms.models import Camera, Download
from vms.urls import media_get


class MediaLinks:
    """Signs media tokens and builds the media server's /get address around them."""

    def __init__(self, auth: Authenticator, clock: Callable[[], datetime] = utcnow) -> None:
        self._auth = auth
        self._clock = clock

    def token(
        self, path: str, start: datetime, end: datetime, *, user_id: int | None = None
    ) -> str:
        """A media token for `path` between `start` and `end`, issued now."""
        return self._auth.media_token(path, start, end, self._clock(), user_id=user_id)

    def for_camera(
        self,
        user_id: int,
        camera: Camera,
        start: datetime,
        end: datetime,
        first_recorded: datetime | None = None,
    ) -> str:
        """The thick client's link: the media server's own mp4 download of the range, from
        its first recorded moment when that is later than `start`."""
        token = self.token(camera.path, start, end, user_id=user_id)
        begin = max(start, first_recorded) if first_recorded else start
        return media_get(camera.media_server.url, camera.path, begin, _seconds(begin, end), token)

    def for_record(self, download: Download) -> str | None:
        """A fresh link for a history record; None once its owner may no longer see the camera."""
        if not download.camera_visible:
            return None
        token = self.token(
            download.camera_path, download.range_from, download.range_to, user_id=download.user_id
        )
        start, end = download.range_from, download.range_to
        return media_get(
            download.media_server_url, download.camera_path, start, _seconds(start, end), token
        )


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
