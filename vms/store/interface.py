"""What every store offers: the SQLite `Database` and the PostgreSQL `PgDatabase` alike.

The service is typed against `Store`; `open_store(config)` picks the engine. Both keep the
same stored representation (text stamps, unix seconds for ranges and expiry), so rows map
to records in one place (`vms.store.rows`) and lists come back in the same order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

from vms.models import Camera, Download, Kind, MediaServer, Session, Status, User
from vms.store.history import Cursor


class Store(Protocol):
    """The store's whole interface: users, cameras, sessions, downloads, jobs and secrets."""

    # True when several processes may use the store at once (PostgreSQL).
    shared: bool

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def set_trace_callback(self, callback: Callable[[str], object] | None) -> None:
        """Send every statement to `callback` (None stops): for tests."""
        ...

    # Users

    async def create_user(
        self, login: str, name: str, password_hash: str, *, is_admin: bool, now: datetime
    ) -> User: ...

    async def user_with_hash(self, login: str) -> tuple[User, str] | None: ...

    async def user(self, user_id: int) -> User | None: ...

    async def users(self) -> list[User]: ...

    async def user_choices(self) -> list[tuple[int, str, str]]: ...

    async def count_users(self) -> int: ...

    async def grant(self, user_id: int, camera_id: int) -> None: ...

    async def grants(self, user_id: int) -> list[int]: ...

    # Cameras and media servers

    async def media_server(self, url: str) -> MediaServer: ...

    async def put_camera(
        self, camera_id: int, name: str, path: str, media_server_url: str, now: datetime
    ) -> Camera: ...

    async def camera(self, camera_id: int) -> Camera | None: ...

    async def visible_camera(self, user: User, camera_id: int) -> Camera | None: ...

    async def visible_cameras(self, user: User) -> list[Camera]: ...

    async def cameras(self) -> list[Camera]: ...

    # Sessions

    async def create_session(
        self,
        session_id: str,
        user_id: int,
        device: str,
        client: str,
        now: datetime,
        expires: datetime,
    ) -> Session: ...

    async def session(self, session_id: str) -> Session | None: ...

    async def end_session(self, session_id: str, now: datetime) -> bool: ...

    # Downloads

    async def create_download(
        self,
        *,
        kind: Kind,
        user: User,
        session: Session,
        camera: Camera,
        range_from: datetime,
        range_to: datetime,
        status: Status,
        now: datetime,
        recorded_from: datetime | None = None,
    ) -> Download: ...

    async def download(self, download_id: int) -> Download | None: ...

    async def list_downloads(
        self,
        *,
        user_id: int | None,
        kinds: Sequence[Kind] = (Kind.LINK,),
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        camera_id: int | None = None,
        status: Status | None = None,
        limit: int,
        offset: int = 0,
        cursor: Cursor | None = None,
    ) -> tuple[list[Download], int]: ...

    async def downloads_by_ids(self, ids: Sequence[int]) -> list[Download]: ...

    async def pending_archive(
        self, session_id: str, camera_id: int, range_from: datetime, range_to: datetime
    ) -> Download | None: ...

    async def count_pending(self, user_id: int, device: str) -> int: ...

    async def archives_in(self, statuses: Sequence[Status]) -> list[Download]: ...

    async def ready_archives_for_session(self, session_id: str) -> list[Download]: ...

    async def manifest(self, download_id: int) -> str | None: ...

    async def update_download(
        self,
        download_id: int,
        now: datetime,
        *,
        expect: Collection[Status] | None = None,
        held_by: str | None = None,
        **fields: Any,
    ) -> Download | None: ...

    async def archives_due(self, now: datetime) -> list[int]: ...

    async def archive_statuses(self) -> dict[int, Status]: ...

    async def mark_expired(self, ids: Sequence[int], now: datetime) -> int: ...

    # Administration

    async def set_password_hash(self, user_id: int, password_hash: str, now: datetime) -> None: ...

    async def end_user_sessions(self, user_id: int, now: datetime) -> list[str]: ...

    async def delete_user(self, user_id: int) -> bool: ...

    async def revoke(self, user_id: int, camera_id: int) -> bool: ...

    async def delete_camera(self, camera_id: int) -> bool: ...

    async def archive_counts(self) -> dict[Status, int]: ...

    async def media_servers(self) -> list[tuple[MediaServer, int]]: ...

    # Archive jobs, worked by any process (claiming leaves `status` alone)

    async def claim_jobs(self, owner: str, now: datetime, lease: float, limit: int) -> list[int]:
        """Take up to `limit` queued or running archives whose lease is free or lapsed."""
        ...

    async def renew_leases(
        self, owner: str, ids: Collection[int], now: datetime, lease: float
    ) -> set[int]:
        """Move `owner`'s leases on these jobs to now + lease; the ids it still holds."""
        ...

    async def release_jobs(self, owner: str, ids: Collection[int]) -> None:
        """Give up `owner`'s hold on these jobs."""
        ...

    # One process at a time (the cleanup timer, the demo recorder)

    async def try_singleton(self, name: str) -> bool:
        """Hold the named role if nobody does."""
        ...

    async def release_singleton(self, name: str) -> None:
        """Stop holding the role (also done by close())."""
        ...

    def device_lock(
        self, user_id: int, device: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around count_pending + create_download, so no two processes pass the cap."""
        ...

    # Keys and secrets shared by every process

    async def secret(self, name: str) -> bytes | None: ...

    async def add_secret(self, name: str, value: bytes, now: datetime) -> bytes:
        """Store `value` under `name` unless one is there; the stored value."""
        ...

    async def set_secret(self, name: str, value: bytes, now: datetime) -> None: ...

    async def secret_names(self) -> list[str]: ...
