"""Links to footage on a camera's media server, each with a media token for that range only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vms.auth import Authenticator
from vms.dates import utcnow
from vms.models import Download
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

    def for_record(self, download: Download) -> str | None:
        """A fresh link for a history record; None once its owner may no longer see the camera.

        It starts at the range's first recorded moment (MediaMTX answers 404 for a start
        inside a gap); the token covers the whole range asked for.
        """
        if not download.camera_visible:
            return None
        token = self.token(
            download.camera_path, download.range_from, download.range_to, user_id=download.user_id
        )
        start, end = download.recorded_from or download.range_from, download.range_to
        return media_get(
            download.media_server_url, download.camera_path, start, _seconds(start, end), token
        )


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
