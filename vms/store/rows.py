"""Column lists and the mapping from result rows to domain records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vms.dates import format_stamp, from_unix, parse_stamp
from vms.models import Camera, Download, Kind, MediaServer, Session, Status, User

DOWNLOAD_COLUMNS = """
    d.id, d.kind, d.user_id, d.session_id, d.camera_id, c.name, d.device, d.client,
    d.range_from, d.range_to, d.status, d.progress, d.size, d.attempts, d.message,
    d.created_at, d.updated_at, d.expires_at, u.login, c.path, m.url,
    u.is_admin OR EXISTS (
        SELECT 1 FROM camera_grants g WHERE g.user_id = d.user_id AND g.camera_id = d.camera_id
    ),
    d.duration, d.sha256, d.recorded_from
"""
DOWNLOAD_FROM = """
    FROM downloads d JOIN cameras c ON c.id = d.camera_id JOIN users u ON u.id = d.user_id
    JOIN media_servers m ON m.id = c.media_server_id
"""


def user(row: Sequence[Any]) -> User:
    return User(
        id=row[0],
        login=row[1],
        name=row[2],
        is_admin=bool(row[3]),
        created_at=parse_stamp(row[4]),
        updated_at=parse_stamp(row[5]),
    )


def session(row: Sequence[Any]) -> Session:
    return Session(
        id=row[0],
        user_id=row[1],
        device=row[2],
        client=row[3],
        created_at=parse_stamp(row[4]),
        expires_at=parse_stamp(row[5]),
        ended_at=parse_stamp(row[6]) if row[6] else None,
    )


def camera(row: Sequence[Any]) -> Camera:
    return Camera(
        id=row[0],
        name=row[1],
        path=row[2],
        created_at=parse_stamp(row[3]),
        media_server=MediaServer(id=row[4], url=row[5]),
    )


def download(row: Sequence[Any]) -> Download:
    return Download(
        id=row[0],
        kind=Kind(row[1]),
        user_id=row[2],
        session_id=row[3],
        camera_id=row[4],
        camera_name=row[5],
        device=row[6],
        client=row[7],
        range_from=from_unix(row[8]),
        range_to=from_unix(row[9]),
        status=Status(row[10]),
        progress=row[11],
        size=row[12],
        attempts=row[13],
        message=row[14],
        created_at=parse_stamp(row[15]),
        updated_at=parse_stamp(row[16]),
        expires_at=from_unix(row[17]) if row[17] is not None else None,
        login=row[18],
        camera_path=row[19],
        media_server_url=row[20],
        camera_visible=bool(row[21]),
        duration=row[22],
        sha256=row[23],
        recorded_from=from_unix(row[24]) if row[24] is not None else None,
    )


# The one insert into downloads; whoever runs it also runs ADD_TOTALS for the same rows.
INSERT_DOWNLOAD = """
    INSERT INTO downloads (kind, user_id, session_id, camera_id, device, client,
        range_from, range_to, status, created_at, updated_at, recorded_from)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Rows inserted with INSERT_DOWNLOAD counted into download_totals, once per batch and key.
ADD_TOTALS = """
    INSERT INTO download_totals (user_id, camera_id, kind, status, n) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT DO UPDATE SET n = n + excluded.n
"""


def totals(inserted: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """ADD_TOTALS parameters for INSERT_DOWNLOAD values: (user, camera, kind, status, count)."""
    counts = Counter((v[1], v[3], v[0], v[8]) for v in inserted)
    return [(*key, n) for key, n in counts.items()]


def moved(before: Iterable[Sequence[Any]], status: str) -> list[tuple[Any, ...]]:
    """ADD_TOTALS parameters for (user, camera, kind, old status, rows) now in `status`."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for user_id, camera_id, kind, old, n in before:
        if old != status:
            counts[(user_id, camera_id, kind, old)] -= n
            counts[(user_id, camera_id, kind, status)] += n
    return [(*key, n) for key, n in counts.items() if n]


USER_COLUMNS = "id, login, name, is_admin, created_at, updated_at"
SESSION_COLUMNS = "id, user_id, device, client, created_at, expires_at, ended_at"
CAMERA_SELECT = """
    SELECT c.id, c.name, c.path, c.created_at, m.id, m.url
    FROM cameras c JOIN media_servers m ON m.id = c.media_server_id
"""


@dataclass(frozen=True)
class NewDownload:
    """A history record or archive job about to be inserted, as either engine stores it."""

    kind: Kind
    user: User
    session: Session
    camera: Camera
    range_from: datetime
    range_to: datetime
    status: Status
    now: datetime
    recorded_from: datetime | None = None

    @property
    def stamp(self) -> str:
        """created_at and updated_at as stored."""
        return format_stamp(self.now)

    def values(self) -> tuple[Any, ...]:
        """INSERT_DOWNLOAD parameters."""
        return (
            str(self.kind),
            self.session.user_id,
            self.session.id,
            self.camera.id,
            self.session.device,
            self.session.client,
            self.range_from.timestamp(),
            self.range_to.timestamp(),
            str(self.status),
            self.stamp,
            self.stamp,
            self.recorded_from.timestamp() if self.recorded_from else None,
        )

    def inserted(self, download_id: int) -> Download:
        """The Download as read back after its insert, without reading it back."""
        created = parse_stamp(self.stamp)
        recorded = self.recorded_from
        return Download(
            id=download_id,
            kind=self.kind,
            user_id=self.session.user_id,
            session_id=self.session.id,
            camera_id=self.camera.id,
            camera_name=self.camera.name,
            device=self.session.device,
            client=self.session.client,
            range_from=from_unix(self.range_from.timestamp()),
            range_to=from_unix(self.range_to.timestamp()),
            status=self.status,
            progress=0,
            size=0,
            attempts=0,
            message=None,
            created_at=created,
            updated_at=created,
            expires_at=None,
            login=self.user.login,
            camera_path=self.camera.path,
            media_server_url=self.camera.media_server.url,
            # Whoever creates a download could see its camera at that moment.
            camera_visible=True,
            recorded_from=from_unix(recorded.timestamp()) if recorded else None,
        )
