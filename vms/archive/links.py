"""Links to footage on a camera's media server, each with a media token for that range only."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta

from vms.auth import Authenticator
from vms.dates import utcnow
from vms.models import Download
from vms.urls import media_get

# Records whose last token is kept for reuse (a few pages of the history and its polls).
RECENT_RECORDS = 4096


class MediaLinks:
    """Signs media tokens and builds the media server's /get address around them.

    A history record's link is drawn again on every page load, status poll and API listing,
    and a signature costs more than the rest of its row (Ed25519, about 60 us). Its token is
    signed once and reused for `reuse` seconds, so a link shown is good for the token's life
    less that at least; a new signing key, server, path or range means a new token.
    """

    def __init__(
        self, auth: Authenticator, clock: Callable[[], datetime] = utcnow, *, reuse: float = 0.0
    ) -> None:
        self._auth = auth
        self._clock = clock
        self._reuse = timedelta(seconds=reuse)
        self._recent: OrderedDict[Hashable, tuple[datetime, str]] = OrderedDict()

    def token(
        self, path: str, start: datetime, end: datetime, *, user_id: int | None = None
    ) -> str:
        """A media token for `path` between `start` and `end`, issued now."""
        return self._auth.media_token(path, start, end, self._clock(), user_id=user_id)

    def for_record(self, download: Download) -> str | None:
        """A link for a history record; None once its owner may no longer see the camera.

        It starts at the range's first recorded moment (MediaMTX answers 404 for a start
        inside a gap); the token covers the whole range asked for.
        """
        if not download.camera_visible:
            return None
        token = self._record_token(download)
        start, end = download.recorded_from or download.range_from, download.range_to
        return media_get(
            download.media_server_url, download.camera_path, start, _seconds(start, end), token
        )

    def _record_token(self, download: Download) -> str:
        key = (
            download.id,
            download.user_id,
            download.media_server_url,
            download.camera_path,
            download.range_from,
            download.range_to,
            self._auth.signing_kid,
        )
        now = self._clock()
        kept = self._recent.get(key)
        if kept is not None and timedelta(0) <= now - kept[0] < self._reuse:
            self._recent.move_to_end(key)
            return kept[1]
        token = self._auth.media_token(
            download.camera_path,
            download.range_from,
            download.range_to,
            now,
            user_id=download.user_id,
        )
        if self._reuse:
            self._recent[key] = (now, token)
            self._recent.move_to_end(key)
            if len(self._recent) > RECENT_RECORDS:
                self._recent.popitem(last=False)
        return token


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
