"""The SQLite store: one aiosqlite connection in WAL mode, and every query the service makes.

One cohesive thing: the class is the store's whole interface (users, cameras, sessions,
downloads), so a second engine implements exactly this; the SQL it runs is beside each method.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from vms.dates import format_stamp, from_unix, parse_stamp
from vms.models import Camera, Download, Kind, MediaServer, Session, Status, User
from vms.store import rows
from vms.store.errors import Conflict, NotFound, StoreError
from vms.store.schema import MIGRATIONS

log = logging.getLogger(__name__)


class Database:
    """One aiosqlite connection in WAL mode; every statement of the service goes through here."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # Every write takes this lock, so a batch transaction never swallows another writer's
        # statement (and never rolls it back with its own).
        self._write_lock = asyncio.Lock()
        self._pending_inserts: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []
        self._inserter: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Open (creating if needed) the database at `path` and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 up front: SQLite gives the -wal and -shm files the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = await aiosqlite.connect(path, isolation_level=None)
        db = cls(conn)
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await db._migrate()
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        """Finish pending inserts and close the connection."""
        if self._inserter is not None:
            await asyncio.gather(self._inserter, return_exceptions=True)
        await self._conn.close()

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this program knows "
                f"({len(MIGRATIONS)}); refusing to touch it"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits on its own; BEGIN..COMMIT inside keeps each step atomic.
            await self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
            log.info("database schema migrated to version %d", number)

    async def schema_version(self) -> int:
        """The schema version stored in the file."""
        row = await self._one("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement; returns lastrowid for inserts, rowcount otherwise."""
        async with self._write_lock, self._conn.execute(sql, tuple(params)) as cursor:
            if sql.lstrip().upper().startswith("INSERT"):
                return cursor.lastrowid or 0
            return cursor.rowcount

    async def _insert_download(self, values: tuple[Any, ...]) -> int:
        """Insert one downloads row as part of the next group commit; its id once durable.

        Under load many requests insert at once; one transaction for all of them costs one
        commit instead of one each, which is most of what a history record costs.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_inserts.append((values, future))
        if self._inserter is None or self._inserter.done():
            self._inserter = asyncio.create_task(self._flush_inserts(), name="db-group-commit")
        return await future

    async def _flush_inserts(self) -> None:
        while self._pending_inserts:
            batch, self._pending_inserts = self._pending_inserts, []
            try:
                async with self._write_lock:
                    await self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        await self._conn.executemany(rows.INSERT_DOWNLOAD, [v for v, _ in batch])
                        last = await self._one("SELECT last_insert_rowid()")
                        await self._conn.execute("COMMIT")
                    except BaseException:
                        await self._conn.execute("ROLLBACK")
                        raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreError(f"insert failed: {type(exc).__name__}"))
                continue
            # One writer holds the lock, so rowids of one statement's rows are consecutive.
            first = int(last[0]) - len(batch) + 1
            for offset, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)

    # Users

    async def create_user(
        self, login: str, name: str, password_hash: str, *, is_admin: bool, now: datetime
    ) -> User:
        """Insert a user; Conflict if the login is taken (case-insensitively)."""
        stamp = format_stamp(now)
        try:
            user_id = await self._write(
                "INSERT INTO users (login, name, password_hash, is_admin, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (login, name, password_hash, int(is_admin), stamp, stamp),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"user {login!r} already exists") from None
        return User(user_id, login, name, is_admin, parse_stamp(stamp), parse_stamp(stamp))

    async def user_with_hash(self, login: str) -> tuple[User, str] | None:
        """The user with this login and their password hash."""
        row = await self._one(
            f"SELECT {rows.USER_COLUMNS}, password_hash FROM users WHERE login = ?", (login,)
        )
        return (rows.user(row), row[6]) if row else None

    async def user(self, user_id: int) -> User | None:
        """The user with this id."""
        row = await self._one(f"SELECT {rows.USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return rows.user(row) if row else None

    async def users(self) -> list[User]:
        """Every user, by id."""
        return [
            rows.user(r)
            for r in await self._all(f"SELECT {rows.USER_COLUMNS} FROM users ORDER BY id")
        ]

    async def count_users(self) -> int:
        """How many users exist."""
        row = await self._one("SELECT count(*) FROM users")
        return int(row[0])

    async def grant(self, user_id: int, camera_id: int) -> None:
        """Let a user see a camera."""
        try:
            await self._write(
                "INSERT OR IGNORE INTO camera_grants (user_id, camera_id) VALUES (?, ?)",
                (user_id, camera_id),
            )
        except sqlite3.IntegrityError:
            raise NotFound(f"camera {camera_id} does not exist") from None

    async def grants(self, user_id: int) -> list[int]:
        """Camera ids granted to a user."""
        found = await self._all(
            "SELECT camera_id FROM camera_grants WHERE user_id = ? ORDER BY camera_id", (user_id,)
        )
        return [r[0] for r in found]

    # Cameras and media servers

    async def media_server(self, url: str) -> MediaServer:
        """The media server with this URL, registered on first use."""
        await self._write("INSERT OR IGNORE INTO media_servers (url) VALUES (?)", (url,))
        row = await self._one("SELECT id, url FROM media_servers WHERE url = ?", (url,))
        return MediaServer(id=row[0], url=row[1])

    async def put_camera(
        self, camera_id: int, name: str, path: str, media_server_url: str, now: datetime
    ) -> Camera:
        """Create or update a camera."""
        server = await self.media_server(media_server_url)
        await self._write(
            "INSERT INTO cameras (id, name, path, media_server_id, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
            " name = excluded.name, path = excluded.path,"
            " media_server_id = excluded.media_server_id",
            (camera_id, name, path, server.id, format_stamp(now)),
        )
        camera = await self.camera(camera_id)
        assert camera is not None
        return camera

    async def camera(self, camera_id: int) -> Camera | None:
        """A camera by id, regardless of who asks."""
        row = await self._one(f"{rows.CAMERA_SELECT} WHERE c.id = ?", (camera_id,))
        return rows.camera(row) if row else None

    async def visible_camera(self, user: User, camera_id: int) -> Camera | None:
        """A camera by id if `user` may see it: admins see all, others their grants."""
        if user.is_admin:
            return await self.camera(camera_id)
        row = await self._one(
            f"{rows.CAMERA_SELECT} JOIN camera_grants g ON g.camera_id = c.id"
            " WHERE c.id = ? AND g.user_id = ?",
            (camera_id, user.id),
        )
        return rows.camera(row) if row else None

    async def visible_cameras(self, user: User) -> list[Camera]:
        """The cameras `user` may see, by id: every one for an operator, else the granted."""
        if user.is_admin:
            return await self.cameras()
        found = await self._all(
            f"{rows.CAMERA_SELECT} JOIN camera_grants g ON g.camera_id = c.id"
            " WHERE g.user_id = ? ORDER BY c.id",
            (user.id,),
        )
        return [rows.camera(r) for r in found]

    async def cameras(self) -> list[Camera]:
        """Every camera, by id."""
        return [rows.camera(r) for r in await self._all(f"{rows.CAMERA_SELECT} ORDER BY c.id")]

    # Sessions

    async def create_session(
        self,
        session_id: str,
        user_id: int,
        device: str,
        client: str,
        now: datetime,
        expires: datetime,
    ) -> Session:
        """Record a device login."""
        await self._write(
            f"INSERT INTO sessions ({rows.SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (session_id, user_id, device, client, format_stamp(now), format_stamp(expires)),
        )
        return Session(session_id, user_id, device, client, now, expires, None)

    async def session(self, session_id: str) -> Session | None:
        """A session by id."""
        row = await self._one(
            f"SELECT {rows.SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        )
        return rows.session(row) if row else None

    async def end_session(self, session_id: str, now: datetime) -> bool:
        """Mark a session ended; False if it was already ended or never existed."""
        changed = await self._write(
            "UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
            (format_stamp(now), session_id),
        )
        return changed > 0

    # Downloads: history records and server-side archives

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
    ) -> Download:
        """Insert a history record or an archive job."""
        stamp = format_stamp(now)
        download_id = await self._insert_download(
            (
                kind,
                session.user_id,
                session.id,
                camera.id,
                session.device,
                session.client,
                range_from.timestamp(),
                range_to.timestamp(),
                status,
                stamp,
                stamp,
                recorded_from.timestamp() if recorded_from else None,
            ),
        )
        created = parse_stamp(stamp)
        return Download(
            id=download_id,
            kind=kind,
            user_id=session.user_id,
            session_id=session.id,
            camera_id=camera.id,
            camera_name=camera.name,
            device=session.device,
            client=session.client,
            range_from=from_unix(range_from.timestamp()),
            range_to=from_unix(range_to.timestamp()),
            status=status,
            progress=0,
            size=0,
            attempts=0,
            message=None,
            created_at=created,
            updated_at=created,
            expires_at=None,
            login=user.login,
            camera_path=camera.path,
            media_server_url=camera.media_server.url,
            # Whoever creates a download could see its camera at that moment.
            camera_visible=True,
            recorded_from=from_unix(recorded_from.timestamp()) if recorded_from else None,
        )

    async def download(self, download_id: int) -> Download | None:
        """A download by id, regardless of owner."""
        row = await self._one(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id = ?", (download_id,)
        )
        return rows.download(row) if row else None

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
        offset: int,
    ) -> tuple[list[Download], int]:
        """One page of downloads, newest first, and the total matching; user None means all.

        One statement: the total comes with the rows (a window count), and is only counted on
        its own when the page is empty or not wanted (limit 0).
        """
        where = [f"d.kind IN ({', '.join('?' * len(kinds))})"]
        params: list[Any] = list(kinds)
        if user_id is not None:
            where.append("d.user_id = ?")
            params.append(user_id)
        if created_from is not None:
            where.append("d.created_at >= ?")
            params.append(format_stamp(created_from))
        if created_to is not None:
            where.append("d.created_at <= ?")
            params.append(format_stamp(created_to))
        if camera_id is not None:
            where.append("d.camera_id = ?")
            params.append(camera_id)
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        clause = " AND ".join(where)
        found: list[Any] = []
        if limit > 0:
            found = await self._all(
                f"SELECT {rows.DOWNLOAD_COLUMNS}, count(*) OVER ()"
                f" {rows.DOWNLOAD_FROM} WHERE {clause}"
                " ORDER BY d.created_at DESC, d.id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        if found:
            return [rows.download(r) for r in found], int(found[0][-1])
        total_row = await self._one(f"SELECT count(*) FROM downloads d WHERE {clause}", params)
        return [], int(total_row[0])

    async def downloads_by_ids(self, ids: Sequence[int]) -> list[Download]:
        """The downloads with these ids that exist, in one query, by id."""
        if not ids:
            return []
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM}"
            f" WHERE d.id IN ({', '.join('?' * len(ids))}) ORDER BY d.id",
            list(ids),
        )
        return [rows.download(r) for r in found]

    async def pending_archive(
        self, session_id: str, camera_id: int, range_from: datetime, range_to: datetime
    ) -> Download | None:
        """This device session's archive of the same camera and range, pending or on disk."""
        row = await self._one(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM}"
            " WHERE d.kind = 'archive' AND d.session_id = ? AND d.camera_id = ?"
            " AND d.range_from = ? AND d.range_to = ? AND d.status IN (?, ?, ?)"
            " ORDER BY d.id DESC LIMIT 1",
            (
                session_id,
                camera_id,
                range_from.timestamp(),
                range_to.timestamp(),
                Status.QUEUED,
                Status.RUNNING,
                Status.READY,
            ),
        )
        return rows.download(row) if row else None

    async def count_pending(self, user_id: int, device: str) -> int:
        """How many archives this user's device has queued or running."""
        row = await self._one(
            "SELECT count(*) FROM downloads WHERE kind = 'archive' AND user_id = ? AND device = ?"
            " AND status IN (?, ?)",
            (user_id, device, Status.QUEUED, Status.RUNNING),
        )
        return int(row[0])

    async def archives_in(self, statuses: Sequence[Status]) -> list[Download]:
        """Every archive in one of `statuses`, oldest first."""
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.kind = 'archive'"
            f" AND d.status IN ({', '.join('?' * len(statuses))}) ORDER BY d.id",
            statuses,
        )
        return [rows.download(r) for r in found]

    async def ready_archives_for_session(self, session_id: str) -> list[Download]:
        """Archives of one session that are ready on disk, oldest first."""
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.kind = 'archive'"
            " AND d.session_id = ? AND d.status = ? ORDER BY d.id",
            (session_id, Status.READY),
        )
        return [rows.download(r) for r in found]

    async def manifest(self, download_id: int) -> str | None:
        """The signed manifest of a download, if it has one."""
        row = await self._one("SELECT manifest FROM downloads WHERE id = ?", (download_id,))
        return None if row is None else row[0]

    async def update_download(
        self,
        download_id: int,
        now: datetime,
        *,
        expect: Collection[Status] | None = None,
        **fields: Any,
    ) -> Download | None:
        """Change some columns (status, progress, size, attempts, message, expires_at, ...).

        With `expect`, only while the row's status is one of those (so a job never overwrites
        a cancel). Returns the row as it is after the step, read under the same lock; None if
        it does not exist.
        """
        allowed = {
            "status",
            "progress",
            "size",
            "attempts",
            "message",
            "expires_at",
            "duration",
            "sha256",
            "manifest",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        values = {k: (v.timestamp() if isinstance(v, datetime) else v) for k, v in fields.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        sql = f"UPDATE downloads SET {assignments}, updated_at = ? WHERE id = ?"
        params = [*values.values(), format_stamp(now), download_id]
        if expect is not None:
            sql += f" AND status IN ({', '.join('?' * len(expect))})"
            params += sorted(expect)
        async with self._write_lock:
            async with self._conn.execute(sql, params):
                pass
            row = await self._one(
                f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id = ?",
                (download_id,),
            )
        return rows.download(row) if row else None

    async def archives_due(self, now: datetime) -> list[int]:
        """Ready archives whose lifetime is over."""
        found = await self._all(
            "SELECT id FROM downloads WHERE kind = 'archive' AND status = ? AND expires_at <= ?",
            (Status.READY, now.timestamp()),
        )
        return [r[0] for r in found]

    async def archive_statuses(self) -> dict[int, Status]:
        """Status of every archive that may own a file: queued, running or ready."""
        found = await self._all(
            "SELECT id, status FROM downloads WHERE kind = 'archive' AND status IN (?, ?, ?)",
            (Status.QUEUED, Status.RUNNING, Status.READY),
        )
        return {r[0]: Status(r[1]) for r in found}

    async def mark_expired(self, ids: Sequence[int], now: datetime) -> int:
        """Mark archives expired, in one transaction per batch."""
        changed = 0
        stamp = format_stamp(now)
        for index in range(0, len(ids), 500):
            batch = list(ids[index : index + 500])
            changed += await self._write(
                f"UPDATE downloads SET status = ?, progress = 0, updated_at = ?"
                f" WHERE kind = 'archive' AND id IN ({', '.join('?' * len(batch))})",
                [Status.EXPIRED, stamp, *batch],
            )
        return changed
