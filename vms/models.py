"""Domain records as the store returns them; plain frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

CLIENTS = ("ios-cctv", "android-cctv", "thick-legal", "web")
THICK_CLIENT = "thick-legal"


class Status(StrEnum):
    """Download states as clients see them."""

    QUEUED = "queued"
    RUNNING = "in progress"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Work still to be done: the archive owns no finished file yet and counts against the cap.
PENDING = frozenset({Status.QUEUED, Status.RUNNING})


class Kind(StrEnum):
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
    kind: Kind
    user_id: int
    session_id: str
    camera_id: int
    camera_name: str
    device: str
    client: str
    range_from: datetime
    range_to: datetime
    status: Status
    progress: int
    size: int
    attempts: int
    message: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    login: str = ""
    # Where the camera's footage is, and whether the owner may still see the camera: read with
    # the row, so presenting a page of downloads needs no query per row.
    camera_path: str = ""
    media_server_url: str = ""
    camera_visible: bool = False
    # Measured while a ready archive was written: seconds of footage in it, and its SHA-256.
    duration: float | None = None
    sha256: str | None = None
    # A link record's first recorded moment, when later than range_from: its links start there.
    recorded_from: datetime | None = None


def effective_status(download: Download, file_exists: bool) -> Status:
    """The status every surface shows: a ready archive whose file is gone reads expired."""
    if download.kind == Kind.ARCHIVE and download.status == Status.READY and not file_exists:
        return Status.EXPIRED
    return download.status
