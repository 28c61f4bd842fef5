"""The SQLite store: one writer and a few readers (WAL), and every query the service makes.

One cohesive thing: the class is the store's whole interface (users, cameras, sessions,
downloads), so a second engine implements exactly this; the SQL it runs is beside each method.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import aiosqlite

from vms.dates import format_stamp, parse_stamp
from vms.models import Camera, Download, Kind, MediaServer, Session, Status, User
from vms.store import rows
from vms.store.errors import Conflict, NotFound, StoreError
from vms.store.history import (
    IN_STATUS_INDEXES,
    READY_ARCHIVE,
    READY_INDEX,
    STATUS_INDEXED,
    Cursor,
    HistoryQuery,
    page_window,
)
from vms.store.schema import MIGRATIONS

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Archives expired per transaction. Each costs a commit and a few round trips to the writer's
# thread, which were most of a large sweep at 500; 5,000 hold the writer about 40 ms (1M rows,
# 2-core machine), the longest another write waits between them.
EXPIRE_BATCH = 5000
# The statuses the pending-count index holds, spelt as in its WHERE: SQLite uses a partial
# index only for a query that repeats its condition.
_PENDING_SQL = f"status IN ('{Status.QUEUED}', '{Status.RUNNING}')"

# Readers beside the one writer: WAL lets them read while it writes, so a long list never
# holds up a short lookup (each connection has its own thread).
READERS = 4


class Database:
    """One writer connection and a small pool of readers in WAL mode; all the service's SQL."""

    # One process uses the file (the lock on DATA keeps it alone).
    shared = False
    # Roles held, by (database file, role name): two stores on one file in one process (as
    # tests open them) still get a role one at a time.
    _roles: ClassVar[dict[tuple[str, str], Database]] = {}

    def __init__(self, conn: aiosqlite.Connection, readers: Sequence[aiosqlite.Connection]) -> None:
        self._conn = conn
        self._readers = tuple(readers)
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in self._readers:
            self._idle.put_nowait(reader)
        # Every write takes this lock, so a batch transaction never swallows another writer's
        # statement (and never rolls it back with its own).
        self._write_lock = asyncio.Lock()
        self._pending_inserts: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []
        self._inserter: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, *, readers: int = READERS) -> Database:
        """Open (creating if needed) the database at `path` and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 up front: SQLite gives the -wal and -shm files the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = await aiosqlite.connect(path, isolation_level=None)
        opened: list[aiosqlite.Connection] = []
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await _migrate(conn)
            for _ in range(readers):
                opened.append(await _open_reader(path))
        except BaseException:
            for reader in opened:
                await reader.close()
            await conn.close()
            raise
        return cls(conn, opened or [conn])

    async def close(self) -> None:
        """Finish pending inserts, give up held roles and close the connections."""
        for key in [key for key, holder in Database._roles.items() if holder is self]:
            del Database._roles[key]
        if self._inserter is not None:
            await asyncio.gather(self._inserter, return_exceptions=True)
        for reader in self._readers:
            if reader is not self._conn:
                await reader.close()
        await self._conn.close()

    async def set_trace_callback(self, callback: Callable[[str], object] | None) -> None:
        """Send every statement of every connection to `callback` (None stops): for tests."""
        for conn in {self._conn, *self._readers}:
            await conn.set_trace_callback(callback)  # type: ignore[arg-type]

    async def schema_version(self) -> int:
        """The schema version stored in the file."""
        row = await self._one("PRAGMA user_version")
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        conn = await self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put_nowait(conn)

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._reader() as conn, conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._reader() as conn, conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _written_one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """A read on the writer's connection, for a caller holding the write lock."""
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement; returns lastrowid for inserts, rowcount otherwise."""
        async with self._write_lock, self._conn.execute(sql, tuple(params)) as cursor:
            if sql.lstrip().upper().startswith("INSERT"):
                return cursor.lastrowid or 0
            return cursor.rowcount

    async def _transaction(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """Run `work` in one transaction on the writer, to its end even if the caller is cancelled.

        A cancelled await leaves its statement running in the writer's thread, so a transaction
        cut there would be half done: this one commits or rolls back as a whole.
        """

        async def run() -> _T:
            async with self._write_lock:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await work()
                    await self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        await self._conn.execute("ROLLBACK")
                    raise
                return result

        return await asyncio.shield(run())

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
                last = await self._transaction(partial(self._insert_rows, [v for v, _ in batch]))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreError(f"insert failed: {type(exc).__name__}"))
                continue
            # One writer holds the lock, so rowids of one statement's rows are consecutive.
            first = last - len(batch) + 1
            for offset, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)

    async def _insert_rows(self, values: list[tuple[Any, ...]]) -> int:
        """Insert downloads rows and count them into the totals; the last row's id."""
        await self._conn.executemany(rows.INSERT_DOWNLOAD, values)
        last = await self._written_one("SELECT last_insert_rowid()")
        await self._conn.executemany(rows.ADD_TOTALS, rows.totals(values))
        return int(last[0])

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

    async def user_choices(self) -> list[tuple[int, str, str]]:
        """(id, name, login) of every user, by id: just what a user picker shows."""
        return [tuple(r) for r in await self._all("SELECT id, name, login FROM users ORDER BY id")]

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
        new = rows.NewDownload(
            kind, user, session, camera, range_from, range_to, status, now, recorded_from
        )
        return new.inserted(await self._insert_download(new.values()))

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
        offset: int = 0,
        cursor: Cursor | None = None,
    ) -> tuple[list[Download], int]:
        """One page of downloads, newest first, and the total matching; user None means all.

        With `cursor`, the page is the `limit` rows next to that row (keyset; `offset` is
        ignored); the total is still of the whole filter. Cost follows the page: the total is
        read from the kept counts (or an index range), a page is read from its nearer end.
        """
        query = HistoryQuery(user_id, kinds, created_from, created_to, camera_id, status)
        total_sql, total_params = query.total_sql()
        total = int((await self._one(total_sql, total_params))[0])
        if cursor is not None:
            window = (limit, 0, cursor.newer) if limit > 0 else None
        else:
            window = page_window(total, limit, offset)
        if window is None:
            return [], total
        count, skip, oldest_first = window
        ids_sql, params = query.ids_sql(
            limit=count, offset=skip, oldest_first=oldest_first, cursor=cursor
        )
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id IN ({ids_sql})",
            params,
        )
        page = [rows.download(r) for r in found]
        page.sort(key=lambda d: (d.created_at, d.id), reverse=True)
        return page, total

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
            "SELECT count(*) FROM downloads INDEXED BY downloads_device_status"
            f" WHERE kind = 'archive' AND user_id = ? AND device = ? AND {_PENDING_SQL}",
            (user_id, device),
        )
        return int(row[0])

    async def archives_in(self, statuses: Sequence[Status]) -> list[Download]:
        """Every archive in one of `statuses`, oldest first."""
        indexed = f" AND ({IN_STATUS_INDEXES})" if set(statuses) <= set(STATUS_INDEXED) else ""
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.kind = 'archive'"
            f" AND d.status IN ({', '.join('?' * len(statuses))}){indexed} ORDER BY d.id",
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
        held_by: str | None = None,
        **fields: Any,
    ) -> Download | None:
        """Change some columns (status, progress, size, attempts, message, expires_at, ...).

        With `expect`, only while the row's status is one of those (so a job never overwrites
        a cancel); with `held_by`, only while that worker holds the job (else nothing is
        written and the answer is None). Returns the row as it is after the step, read under
        the same lock; None if it does not exist.
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
        if held_by is not None:
            sql += " AND claimed_by = ?"
            params.append(held_by)

        async def update() -> Any:
            before = await self._written_one(
                "SELECT user_id, camera_id, kind, status, claimed_by FROM downloads WHERE id = ?",
                (download_id,),
            )
            if held_by is not None and (before is None or before[4] != held_by):
                return None
            async with self._conn.execute(sql, params) as cursor:
                changed = cursor.rowcount
            if before is not None and changed and "status" in values:
                moves = rows.moved([(*before[:4], 1)], str(values["status"]))
                await self._conn.executemany(rows.ADD_TOTALS, moves)
            return await self._written_one(
                f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id = ?",
                (download_id,),
            )

        row = await self._transaction(update)
        return rows.download(row) if row else None

    async def archives_due(self, now: datetime) -> list[int]:
        """Ready archives whose lifetime is over.

        Plain ints, no row tuples: a sweep may find 100k, and that many tuples alive at once
        wake the garbage collector, whose full pass stalls the loop.
        """
        async with (
            self._reader() as conn,
            conn.execute(
                f"SELECT id FROM downloads INDEXED BY {READY_INDEX}"
                f" WHERE {READY_ARCHIVE} AND expires_at <= ?",
                (now.timestamp(),),
            ) as cursor,
        ):
            # aiosqlite types the setter as a class; sqlite3 takes any callable.
            cursor.row_factory = _first_column  # type: ignore[assignment]
            return cast("list[int]", await cursor.fetchall())

    async def archive_statuses(self) -> dict[int, Status]:
        """Status of every archive that may own a file: queued, running or ready.

        Each half reads the partial index that holds just its rows (the due one, the pending
        count's), so this costs the live archives, not the history.
        """
        found = await self._all(
            f"SELECT id, status FROM downloads INDEXED BY {READY_INDEX} WHERE {READY_ARCHIVE}"
            " UNION ALL SELECT id, status FROM downloads INDEXED BY downloads_device_status"
            f" WHERE kind = 'archive' AND {_PENDING_SQL}"
        )
        return {r[0]: Status(r[1]) for r in found}

    async def mark_expired(self, ids: Sequence[int], now: datetime) -> int:
        """Mark archives expired, a transaction per batch that also moves their totals.

        Other writes go between batches. The batch is found by primary key (`+kind` keeps the
        planner off the kind indexes); rows already expired are neither changed nor counted.
        Their old statuses are read counted per total, so a batch reads back a few rows, not
        one per archive.
        """
        changed = 0
        stamp = format_stamp(now)
        for index in range(0, len(ids), EXPIRE_BATCH):
            batch = list(ids[index : index + EXPIRE_BATCH])
            where = (
                f"WHERE id IN ({', '.join('?' * len(batch))}) AND +kind = 'archive'"
                f" AND +status <> '{Status.EXPIRED}'"
            )

            async def expire(batch: list[int] = batch, where: str = where) -> int:
                before = await self._conn.execute_fetchall(
                    f"SELECT user_id, camera_id, kind, status, count(*) FROM downloads {where}"
                    " GROUP BY user_id, camera_id, kind, status",
                    batch,
                )
                await self._conn.execute_fetchall(
                    f"UPDATE downloads SET status = ?, progress = 0, updated_at = ? {where}",
                    [Status.EXPIRED, stamp, *batch],
                )
                await self._conn.executemany(rows.ADD_TOTALS, rows.moved(before, Status.EXPIRED))
                # Read in this transaction with the same WHERE: exactly the rows updated.
                return sum(row[4] for row in before)

            changed += await self._transaction(expire)
        return changed

    # Administration (the command line)

    async def set_password_hash(self, user_id: int, password_hash: str, now: datetime) -> None:
        """Replace a user's password hash."""
        await self._write(
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?",
            (password_hash, format_stamp(now), user_id),
        )

    async def end_user_sessions(self, user_id: int, now: datetime) -> list[str]:
        """End every live session of a user; the ids of those ended."""
        async with self._write_lock:
            async with self._conn.execute(
                "SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL", (user_id,)
            ) as cursor:
                found = list(await cursor.fetchall())
            async with self._conn.execute(
                "UPDATE sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL",
                (format_stamp(now), user_id),
            ):
                pass
        return [r[0] for r in found]

    async def delete_user(self, user_id: int) -> bool:
        """Delete a user with their grants, sessions and history; False if there was none."""
        return await self._write("DELETE FROM users WHERE id = ?", (user_id,)) > 0

    async def revoke(self, user_id: int, camera_id: int) -> bool:
        """Stop letting a user see a camera; False if it was not granted."""
        changed = await self._write(
            "DELETE FROM camera_grants WHERE user_id = ? AND camera_id = ?", (user_id, camera_id)
        )
        return changed > 0

    async def delete_camera(self, camera_id: int) -> bool:
        """Delete a camera with its grants and history; False if there was none."""
        return await self._write("DELETE FROM cameras WHERE id = ?", (camera_id,)) > 0

    async def archive_counts(self) -> dict[Status, int]:
        """How many server-side archives are in each status (from the kept totals)."""
        found = await self._all(
            "SELECT status, sum(n) FROM download_totals WHERE kind = 'archive' GROUP BY status"
        )
        return {Status(r[0]): int(r[1]) for r in found}

    async def media_servers(self) -> list[tuple[MediaServer, int]]:
        """Every media server that has cameras, with how many."""
        found = await self._all(
            "SELECT m.id, m.url, count(c.id) FROM media_servers m"
            " JOIN cameras c ON c.media_server_id = m.id GROUP BY m.id ORDER BY m.id"
        )
        return [(MediaServer(id=r[0], url=r[1]), int(r[2])) for r in found]

    # Beyond one box: jobs any process can work, roles one process holds, shared secrets

    async def claim_jobs(self, owner: str, now: datetime, lease: float, limit: int) -> list[int]:
        """Take up to `limit` archive jobs (queued or in progress) whose lease is free or
        lapsed, oldest first; `owner` holds them until now + lease. The ids taken."""
        if limit <= 0:
            return []
        async with (
            self._write_lock,
            self._conn.execute(
                "UPDATE downloads SET claimed_by = ?, lease_until = ? WHERE id IN ("
                " SELECT id FROM downloads INDEXED BY downloads_claimable"
                f" WHERE kind = 'archive' AND {_PENDING_SQL}"
                " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?"
                ") RETURNING id",
                (owner, now.timestamp() + lease, now.timestamp(), limit),
            ) as cursor,
        ):
            taken = [r[0] for r in await cursor.fetchall()]
        return sorted(taken)

    async def renew_leases(
        self, owner: str, ids: Collection[int], now: datetime, lease: float
    ) -> set[int]:
        """Move `owner`'s leases on these jobs to now + lease; the ids it still holds (not
        those taken over by another owner, or no longer queued or in progress)."""
        if not ids:
            return set()
        async with (
            self._write_lock,
            self._conn.execute(
                "UPDATE downloads SET lease_until = ?"
                f" WHERE id IN ({', '.join('?' * len(ids))}) AND claimed_by = ?"
                f" AND kind = 'archive' AND {_PENDING_SQL} RETURNING id",
                (now.timestamp() + lease, *ids, owner),
            ) as cursor,
        ):
            return {r[0] for r in await cursor.fetchall()}

    async def release_jobs(self, owner: str, ids: Collection[int]) -> None:
        """Give up `owner`'s hold on these jobs, so any worker may claim them at once."""
        if not ids:
            return
        await self._write(
            "UPDATE downloads SET claimed_by = NULL, lease_until = NULL"
            f" WHERE id IN ({', '.join('?' * len(ids))}) AND claimed_by = ?",
            (*ids, owner),
        )

    async def try_singleton(self, name: str) -> bool:
        """Hold the role `name` unless another store on this file does (the lock on DATA
        keeps other processes away, so a served SQLite file always gets it)."""
        key = (await self._file(), name)
        holder = Database._roles.setdefault(key, self)
        return holder is self

    async def release_singleton(self, name: str) -> None:
        """Stop holding the role `name` (close() lets go of every role too)."""
        key = (await self._file(), name)
        if Database._roles.get(key) is self:
            del Database._roles[key]

    async def _file(self) -> str:
        """The database file's full path, as SQLite resolved it (symbolic links followed)."""
        row = await self._one("PRAGMA database_list")
        return str(row[2])

    @asynccontextmanager
    async def device_lock(self, user_id: int, device: str) -> AsyncIterator[None]:
        """Held around the per-device cap decision; nothing to do here, since one process
        uses the file and its own asyncio lock already orders its requests."""
        yield

    async def secret(self, name: str) -> bytes | None:
        """The secret stored under `name`, if any."""
        row = await self._one("SELECT value FROM secrets WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])

    async def add_secret(self, name: str, value: bytes, now: datetime) -> bytes:
        """Store `value` under `name` unless one is there; the stored value (first wins)."""

        async def add() -> Any:
            await self._conn.execute(
                "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO NOTHING",
                (name, value, format_stamp(now)),
            )
            return await self._written_one("SELECT value FROM secrets WHERE name = ?", (name,))

        return bytes((await self._transaction(add))[0])

    async def set_secret(self, name: str, value: bytes, now: datetime) -> None:
        """Store `value` under `name`, replacing what was there (key rotation)."""
        await self._write(
            "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value,"
            " created_at = excluded.created_at",
            (name, value, format_stamp(now)),
        )

    async def secret_names(self) -> list[str]:
        """The names of every stored secret, sorted."""
        return [r[0] for r in await self._all("SELECT name FROM secrets ORDER BY name")]


def _first_column(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Any:
    return row[0]


async def _migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise StoreError(
            f"database schema version {version} is newer than this program knows "
            f"({len(MIGRATIONS)}); refusing to touch it"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits on its own; BEGIN..COMMIT inside keeps each step atomic.
        await conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
        )
        log.info("database schema migrated to version %d", number)


async def _open_reader(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute("PRAGMA query_only = ON")
    except BaseException:
        await conn.close()
        raise
    return conn
