"""Domain records as the store returns them; plain frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CLIENTS = ("ios-cctv", "android-cctv", "thick-legal", "web")
THICK_CLIENT = "thick-legal"


class Status:
    """Download states as clients see them."""

    QUEUED = "queued"
    RUNNING = "in progress"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"

    PENDING = (QUEUED, RUNNING)


class Kind:
    """History records (thick-client links) and archives the server fetches itself."""

    LINK = "link"
    ARCHIVE = "archive"


@dataclass(frozen=True)
class User:
    """A person or app account."""

    id: int
    login: str
    name: str
    is_admin: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Session:
    """One device login; its id is the access token's `jti`."""

    id: str
    user_id: int
    device: str
    client: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class MediaServer:
    """A server speaking MediaMTX's playback API."""

    id: int
    url: str


@dataclass(frozen=True)
class Camera:
    """A camera and where its recordings live."""

    id: int
    name: str
    path: str
    media_server: MediaServer
    created_at: datetime


@dataclass(frozen=True)
class Download:
    """A history record (kind link) or a server-side archive (kind archive)."""

    id: int
    kind: str
    user_id: int
    session_id: str
    camera_id: int
    camera_name: str
    device: str
    client: str
    range_from: datetime
    range_to: datetime
    status: str
    progress: int
    size: int
    attempts: int
    message: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    login: str = ""
