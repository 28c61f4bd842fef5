"""The PostgreSQL store: the same interface and behaviour as the SQLite one, on an asyncpg pool.

Several processes share one database, so what SQLite gets from being alone is asked of
PostgreSQL here: the schema is migrated under an advisory lock, archive jobs are claimed with
FOR UPDATE SKIP LOCKED, a singleton role is an advisory lock held by a connection of its own
(so it is freed when the process dies), and the per-device cap decision takes an advisory
lock. SQL is written with `?` like the SQLite store's and numbered on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from vms.dates import format_stamp, parse_stamp
from vms.models import Camera, Download, Kind, MediaServer, Session, Status, User
from vms.store import rows
from vms.store.errors import Conflict, NotFound, StoreError
from vms.store.history import Cursor, HistoryQuery, numbered, page_window
from vms.store.pg_schema import PG_MIGRATIONS
from vms.store.schema import MIGRATIONS

log = logging.getLogger(__name__)
_T = TypeVar("_T")

EXPIRE_BATCH = 500
POOL_SIZE = 10
# Connections that wait on a device's advisory lock: apart from the pool, so holders waiting
# for a lock never take the connections the holder of it needs to finish.
LOCK_POOL_SIZE = 4
# The first key of every advisory lock the store takes ("vms"), the second says which.
_LOCK_SPACE = 0x766D73
_MIGRATION_LOCK = 0
_PENDING_SQL = f"status IN ('{Status.QUEUED}', '{Status.RUNNING}')"
_NOT_EXPIRED = f"status <> '{Status.EXPIRED}'"
_ARCHIVE_PENDING = f"kind = '{Kind.ARCHIVE}' AND {_PENDING_SQL}"

_INSERT_DOWNLOAD = numbered(rows.INSERT_DOWNLOAD.rstrip() + " RETURNING id")
_ADD_TOTALS = """
    INSERT INTO download_totals (user_id, camera_id, kind, status, n) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (user_id, camera_id, kind, status) DO UPDATE SET n = download_totals.n + excluded.n
"""

# What connecting can raise besides a StoreError: refused, unreachable, bad credentials.
_CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)

if len(PG_MIGRATIONS) != len(MIGRATIONS):  # pragma: no cover - caught by any test run
    raise RuntimeError("pg_schema.py and schema.py must have the same number of migrations")


def where_to(url: str) -> str:
    """The server and database of `url`, without user or password: for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host}{port}{parts.path}"


class PgDatabase:
    """A pool of connections to one PostgreSQL database; all the service's SQL."""

    shared = True

    def __init__(self, url: str, pool: Any, lock_pool: Any, trace: _Trace) -> None:
        self._url = url
        self._trace = trace
        self._pool = pool
        self._lock_pool = lock_pool
        self._singletons: dict[str, Any] = {}
        self._pending_inserts: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []
        self._inserter: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, *, pool_size: int = POOL_SIZE) -> PgDatabase:
        """Connect to the database at `url` and bring its schema up to date.

        Any failure is a StoreError that names the server but never the password.
        """
        pools: list[Any] = []
        trace = _Trace()
        try:
            pools.append(
                await asyncpg.create_pool(url, min_size=1, max_size=pool_size, init=trace.attach)
            )
            pools.append(await asyncpg.create_pool(url, min_size=0, max_size=LOCK_POOL_SIZE))
            async with pools[0].acquire() as conn:
                await _migrate(conn)
        except BaseException as exc:
            for pool in pools:
                await pool.close()
            if isinstance(exc, _CONNECT_ERRORS):
                raise StoreError(_failure(url, exc)) from None
            raise
        pool, lock_pool = pools
        return cls(url, pool, lock_pool, trace)

    async def close(self) -> None:
        """Finish pending inserts, give up every role held and close the connections."""
        if self._inserter is not None:
            await asyncio.gather(self._inserter, return_exceptions=True)
        for name in list(self._singletons):
            await self.release_singleton(name)
        await self._lock_pool.close()
        await self._pool.close()

    async def set_trace_callback(self, callback: Callable[[str], object] | None) -> None:
        """Send every statement of the pool's connections to `callback` (None stops): for tests."""
        self._trace.callback = callback

    async def schema_version(self) -> int:
        """The schema version stored in the database."""
        return int(await self._value("SELECT version FROM vms_schema"))

    async def _one(self, sql: str, *params: Any) -> Any:
        return await self._pool.fetchrow(numbered(sql), *params)

    async def _all(self, sql: str, *params: Any) -> list[Any]:
        return list(await self._pool.fetch(numbered(sql), *params))

    async def _value(self, sql: str, *params: Any) -> Any:
        return await self._pool.fetchval(numbered(sql), *params)

    async def _write(self, sql: str, *params: Any) -> int:
        """Run one write statement to its end even if the caller is cancelled; rows changed."""
        status = await asyncio.shield(self._pool.execute(numbered(sql), *params))
        return _changed(status)

    async def _transaction(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run `work(conn)` in one transaction, to its end even if the caller is cancelled."""

        async def run() -> _T:
            async with self._pool.acquire() as conn, conn.transaction():
                return await work(conn)

        return await asyncio.shield(run())

    # Users

    async def create_user(
        self, login: str, name: str, password_hash: str, *, is_admin: bool, now: datetime
    ) -> User:
        """Insert a user; Conflict if the login is taken (case-insensitively)."""
        stamp = format_stamp(now)
        try:
            user_id = await asyncio.shield(
                self._pool.fetchval(
                    "INSERT INTO users (login, name, password_hash, is_admin, created_at,"
                    " updated_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    login,
                    name,
                    password_hash,
                    is_admin,
                    stamp,
                    stamp,
                )
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"user {login!r} already exists") from None
        return User(user_id, login, name, is_admin, parse_stamp(stamp), parse_stamp(stamp))

    async def user_with_hash(self, login: str) -> tuple[User, str] | None:
        """The user with this login (case-insensitively) and their password hash."""
        row = await self._one(
            f"SELECT {rows.USER_COLUMNS}, password_hash FROM users WHERE lower(login) = lower(?)",
            login,
        )
        return (rows.user(row), row[6]) if row else None

    async def user(self, user_id: int) -> User | None:
        """The user with this id."""
        row = await self._one(f"SELECT {rows.USER_COLUMNS} FROM users WHERE id = ?", user_id)
        return rows.user(row) if row else None

    async def users(self) -> list[User]:
        """Every user, by id."""
        found = await self._all(f"SELECT {rows.USER_COLUMNS} FROM users ORDER BY id")
        return [rows.user(r) for r in found]

    async def user_choices(self) -> list[tuple[int, str, str]]:
        """(id, name, login) of every user, by id."""
        found = await self._all("SELECT id, name, login FROM users ORDER BY id")
        return [(r[0], r[1], r[2]) for r in found]

    async def count_users(self) -> int:
        """How many users exist."""
        return int(await self._value("SELECT count(*) FROM users"))

    async def grant(self, user_id: int, camera_id: int) -> None:
        """Let a user see a camera."""
        try:
            await self._write(
                "INSERT INTO camera_grants (user_id, camera_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                user_id,
                camera_id,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"camera {camera_id} does not exist") from None

    async def grants(self, user_id: int) -> list[int]:
        """Camera ids granted to a user."""
        found = await self._all(
            "SELECT camera_id FROM camera_grants WHERE user_id = ? ORDER BY camera_id", user_id
        )
        return [r[0] for r in found]

    # Cameras and media servers

    async def media_server(self, url: str) -> MediaServer:
        """The media server with this URL, registered on first use."""
        await self._write("INSERT INTO media_servers (url) VALUES (?) ON CONFLICT DO NOTHING", url)
        row = await self._one("SELECT id, url FROM media_servers WHERE url = ?", url)
        return MediaServer(id=row[0], url=row[1])

    async def put_camera(
        self, camera_id: int, name: str, path: str, media_server_url: str, now: datetime
    ) -> Camera:
        """Create or update a camera."""
        server = await self.media_server(media_server_url)
        await self._write(
            "INSERT INTO cameras (id, name, path, media_server_id, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " name = excluded.name, path = excluded.path,"
            " media_server_id = excluded.media_server_id",
            camera_id,
            name,
            path,
            server.id,
            format_stamp(now),
        )
        camera = await self.camera(camera_id)
        assert camera is not None
        return camera

    async def camera(self, camera_id: int) -> Camera | None:
        """A camera by id, regardless of who asks."""
        row = await self._one(f"{rows.CAMERA_SELECT} WHERE c.id = ?", camera_id)
        return rows.camera(row) if row else None

    async def visible_camera(self, user: User, camera_id: int) -> Camera | None:
        """A camera by id if `user` may see it: admins see all, others their grants."""
        if user.is_admin:
            return await self.camera(camera_id)
        row = await self._one(
            f"{rows.CAMERA_SELECT} JOIN camera_grants g ON g.camera_id = c.id"
            " WHERE c.id = ? AND g.user_id = ?",
            camera_id,
            user.id,
        )
        return rows.camera(row) if row else None

    async def visible_cameras(self, user: User) -> list[Camera]:
        """The cameras `user` may see, by id."""
        if user.is_admin:
            return await self.cameras()
        found = await self._all(
            f"{rows.CAMERA_SELECT} JOIN camera_grants g ON g.camera_id = c.id"
            " WHERE g.user_id = ? ORDER BY c.id",
            user.id,
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
            session_id,
            user_id,
            device,
            client,
            format_stamp(now),
            format_stamp(expires),
        )
        return Session(session_id, user_id, device, client, now, expires, None)

    async def session(self, session_id: str) -> Session | None:
        """A session by id."""
        row = await self._one(
            f"SELECT {rows.SESSION_COLUMNS} FROM sessions WHERE id = ?", session_id
        )
        return rows.session(row) if row else None

    async def end_session(self, session_id: str, now: datetime) -> bool:
        """Mark a session ended; False if it was already ended or never existed."""
        changed = await self._write(
            "UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
            format_stamp(now),
            session_id,
        )
        return changed > 0

    # Downloads: history records and server-side archives

    async def _insert_download(self, values: tuple[Any, ...]) -> int:
        """Insert one downloads row as part of the next group commit; its id once durable.

        Under load many requests insert at once, and each insert also moves the same
        `download_totals` row: one transaction for all of them takes that row's lock once
        and costs one commit instead of one each.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_inserts.append((values, future))
        if self._inserter is None or self._inserter.done():
            self._inserter = asyncio.create_task(self._flush_inserts(), name="pg-group-commit")
        return await future

    async def _flush_inserts(self) -> None:
        while self._pending_inserts:
            batch, self._pending_inserts = self._pending_inserts, []

            async def insert(conn: Any, batch: list[Any] = batch) -> list[int]:
                ids = [int(await conn.fetchval(_INSERT_DOWNLOAD, *v)) for v, _ in batch]
                await conn.executemany(_ADD_TOTALS, rows.totals([v for v, _ in batch]))
                return ids

            try:
                ids = await self._transaction(insert)
            except Exception as exc:
                reason = type(exc).__name__
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreError(f"insert failed: {reason}"))
                continue
            for download_id, (_, future) in zip(ids, batch, strict=True):
                if not future.done():
                    future.set_result(download_id)

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
        """Insert a history record or an archive job, counted into the totals at once."""
        new = rows.NewDownload(
            kind, user, session, camera, range_from, range_to, status, now, recorded_from
        )
        return new.inserted(await self._insert_download(new.values()))

    async def download(self, download_id: int) -> Download | None:
        """A download by id, regardless of owner."""
        row = await self._one(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id = ?", download_id
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
        """One page of downloads, newest first, and the total matching; user None means all."""
        query = HistoryQuery(user_id, kinds, created_from, created_to, camera_id, status)
        total_sql, total_params = query.total_sql(postgres=True)
        total = int(await self._pool.fetchval(total_sql, *total_params))
        if cursor is not None:
            window = (limit, 0, cursor.newer) if limit > 0 else None
        else:
            window = page_window(total, limit, offset)
        if window is None:
            return [], total
        count, skip, oldest_first = window
        ids_sql, params = query.ids_sql(
            limit=count, offset=skip, oldest_first=oldest_first, cursor=cursor, postgres=True
        )
        found = await self._pool.fetch(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id IN ({ids_sql})",
            *params,
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
            " WHERE d.id = ANY(?::bigint[]) ORDER BY d.id",
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
            session_id,
            camera_id,
            range_from.timestamp(),
            range_to.timestamp(),
            Status.QUEUED,
            Status.RUNNING,
            Status.READY,
        )
        return rows.download(row) if row else None

    async def count_pending(self, user_id: int, device: str) -> int:
        """How many archives this user's device has queued or running."""
        return int(
            await self._value(
                "SELECT count(*) FROM downloads"
                f" WHERE kind = 'archive' AND user_id = ? AND device = ? AND {_PENDING_SQL}",
                user_id,
                device,
            )
        )

    async def archives_in(self, statuses: Sequence[Status]) -> list[Download]:
        """Every archive in one of `statuses`, oldest first."""
        unexpired = "" if Status.EXPIRED in statuses else f" AND d.{_NOT_EXPIRED}"
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.kind = 'archive'"
            f" AND d.status = ANY(?::text[]){unexpired} ORDER BY d.id",
            [str(s) for s in statuses],
        )
        return [rows.download(r) for r in found]

    async def ready_archives_for_session(self, session_id: str) -> list[Download]:
        """Archives of one session that are ready on disk, oldest first."""
        found = await self._all(
            f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.kind = 'archive'"
            " AND d.session_id = ? AND d.status = ? ORDER BY d.id",
            session_id,
            Status.READY,
        )
        return [rows.download(r) for r in found]

    async def manifest(self, download_id: int) -> str | None:
        """The signed manifest of a download, if it has one."""
        value = await self._value("SELECT manifest FROM downloads WHERE id = ?", download_id)
        return None if value is None else str(value)

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

        With `expect`, only while the row's status is one of those; with `held_by`, only while
        that owner holds the job. Returns the row as it is after the step; None if it does
        not exist.
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
        values = {k: (str(v) if isinstance(v, Status) else v) for k, v in values.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        sql = f"UPDATE downloads SET {assignments}, updated_at = ? WHERE id = ?"
        params: list[Any] = [*values.values(), format_stamp(now), download_id]
        if expect is not None:
            sql += " AND status = ANY(?::text[])"
            params.append(sorted(str(s) for s in expect))
        if held_by is not None:
            sql += " AND claimed_by = ?"
            params.append(held_by)

        async def update(conn: Any) -> Any:
            before = await conn.fetchrow(
                "SELECT user_id, camera_id, kind, status, claimed_by FROM downloads"
                " WHERE id = $1 FOR UPDATE",
                download_id,
            )
            if before is None or (held_by is not None and before[4] != held_by):
                return None
            changed = _changed(await conn.execute(numbered(sql), *params))
            if changed and "status" in values:
                moves = rows.moved([(*tuple(before)[:4], 1)], str(values["status"]))
                await conn.executemany(_ADD_TOTALS, moves)
            return await conn.fetchrow(
                f"SELECT {rows.DOWNLOAD_COLUMNS} {rows.DOWNLOAD_FROM} WHERE d.id = $1",
                download_id,
            )

        row = await self._transaction(update)
        return rows.download(row) if row else None

    async def archives_due(self, now: datetime) -> list[int]:
        """Ready archives whose lifetime is over."""
        found = await self._all(
            "SELECT id FROM downloads"
            f" WHERE kind = 'archive' AND status = '{Status.READY}' AND expires_at <= ?"
            " ORDER BY id",
            now.timestamp(),
        )
        return [r[0] for r in found]

    async def archive_statuses(self) -> dict[int, Status]:
        """Status of every archive that may own a file: queued, running or ready."""
        found = await self._all(
            "SELECT id, status FROM downloads WHERE kind = 'archive' AND status IN (?, ?, ?)"
            f" AND {_NOT_EXPIRED}",
            Status.QUEUED,
            Status.RUNNING,
            Status.READY,
        )
        return {r[0]: Status(r[1]) for r in found}

    async def mark_expired(self, ids: Sequence[int], now: datetime) -> int:
        """Mark archives expired, a transaction per batch that also moves their totals."""
        changed = 0
        stamp = format_stamp(now)
        where = f"WHERE id = ANY($1::bigint[]) AND kind = 'archive' AND {_NOT_EXPIRED}"
        for index in range(0, len(ids), EXPIRE_BATCH):
            batch = list(ids[index : index + EXPIRE_BATCH])

            async def expire(conn: Any, batch: list[int] = batch) -> int:
                before = await conn.fetch(
                    f"SELECT user_id, camera_id, kind, status FROM downloads {where}"
                    " ORDER BY id FOR UPDATE",
                    batch,
                )
                done = _changed(
                    await conn.execute(
                        f"UPDATE downloads SET status = $2, progress = 0, updated_at = $3 {where}",
                        batch,
                        Status.EXPIRED,
                        stamp,
                    )
                )
                moves = rows.moved([(*tuple(r), 1) for r in before], Status.EXPIRED)
                await conn.executemany(_ADD_TOTALS, moves)
                return done

            changed += await self._transaction(expire)
        return changed

    # Administration (the command line)

    async def set_password_hash(self, user_id: int, password_hash: str, now: datetime) -> None:
        """Replace a user's password hash."""
        await self._write(
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?",
            password_hash,
            format_stamp(now),
            user_id,
        )

    async def end_user_sessions(self, user_id: int, now: datetime) -> list[str]:
        """End every live session of a user; the ids of those ended."""
        found = await asyncio.shield(
            self._pool.fetch(
                "UPDATE sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL"
                " RETURNING id",
                format_stamp(now),
                user_id,
            )
        )
        return sorted(r[0] for r in found)

    async def delete_user(self, user_id: int) -> bool:
        """Delete a user with their grants, sessions and history; False if there was none."""
        return await self._write("DELETE FROM users WHERE id = ?", user_id) > 0

    async def revoke(self, user_id: int, camera_id: int) -> bool:
        """Stop letting a user see a camera; False if it was not granted."""
        changed = await self._write(
            "DELETE FROM camera_grants WHERE user_id = ? AND camera_id = ?", user_id, camera_id
        )
        return changed > 0

    async def delete_camera(self, camera_id: int) -> bool:
        """Delete a camera with its grants and history; False if there was none."""
        return await self._write("DELETE FROM cameras WHERE id = ?", camera_id) > 0

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

    # Archive jobs, worked by any process

    async def claim_jobs(self, owner: str, now: datetime, lease: float, limit: int) -> list[int]:
        """Take up to `limit` queued or running archives whose lease is free or lapsed.

        Rows another process is claiming at this moment are skipped, not waited for. The rows
        are picked in a CTE, which PostgreSQL runs once: as `IN (subquery)` the planner may
        run a LIMIT ... SKIP LOCKED subquery again and so take more than `limit` rows.
        """
        found = await asyncio.shield(
            self._pool.fetch(
                "WITH picked AS ("
                f" SELECT id FROM downloads WHERE {_ARCHIVE_PENDING}"
                " AND (lease_until IS NULL OR lease_until <= $3)"
                " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
                " UPDATE downloads d SET claimed_by = $1, lease_until = $2"
                " FROM picked WHERE d.id = picked.id RETURNING d.id",
                owner,
                now.timestamp() + lease,
                now.timestamp(),
                limit,
            )
        )
        return sorted(r[0] for r in found)

    async def renew_leases(
        self, owner: str, ids: Collection[int], now: datetime, lease: float
    ) -> set[int]:
        """Move `owner`'s leases on these jobs to now + lease; the ids it still holds."""
        if not ids:
            return set()
        found = await asyncio.shield(
            self._pool.fetch(
                "UPDATE downloads SET lease_until = $1 WHERE id = ANY($2::bigint[])"
                f" AND claimed_by = $3 AND {_ARCHIVE_PENDING} RETURNING id",
                now.timestamp() + lease,
                list(ids),
                owner,
            )
        )
        return {r[0] for r in found}

    async def release_jobs(self, owner: str, ids: Collection[int]) -> None:
        """Give up `owner`'s hold on these jobs."""
        if ids:
            await self._write(
                "UPDATE downloads SET claimed_by = NULL, lease_until = NULL"
                " WHERE id = ANY(?::bigint[]) AND claimed_by = ?",
                list(ids),
                owner,
            )

    # One process at a time

    async def try_singleton(self, name: str) -> bool:
        """Hold the named role if nobody does, on a connection kept for it.

        The lock lives as long as that connection: when the process dies (or the server
        drops the connection), the role is free for another process to take.
        """
        if name in self._singletons:
            return True
        try:
            conn = await asyncpg.connect(self._url)
        except _CONNECT_ERRORS as exc:
            raise StoreError(_failure(self._url, exc)) from None
        try:
            held = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_SPACE + 1, name
            )
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            return False
        self._singletons[name] = conn
        conn.add_termination_listener(lambda _: self._singletons.pop(name, None))
        return True

    async def release_singleton(self, name: str) -> None:
        """Stop holding the role: its connection closes, and the lock with it."""
        conn = self._singletons.pop(name, None)
        if conn is not None:
            await conn.close()

    def device_lock(self, user_id: int, device: str) -> AbstractAsyncContextManager[None]:
        """Held around count_pending + create_download: a session advisory lock per device."""
        return self._device_lock(f"{user_id}:{device}")

    @asynccontextmanager
    async def _device_lock(self, key: str) -> AsyncIterator[None]:
        # The pool resets a connection it gets back (pg_advisory_unlock_all), so a holder
        # cancelled between lock and unlock leaves no lock behind.
        async with self._lock_pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _LOCK_SPACE + 2, key)
            try:
                yield
            finally:
                await asyncio.shield(
                    conn.execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_SPACE + 2, key
                    )
                )

    # Keys and secrets shared by every process

    async def secret(self, name: str) -> bytes | None:
        """The secret stored under `name`."""
        value = await self._value("SELECT value FROM secrets WHERE name = ?", name)
        return None if value is None else bytes(value)

    async def add_secret(self, name: str, value: bytes, now: datetime) -> bytes:
        """Store `value` under `name` unless one is there; the stored value (first wins)."""
        await self._write(
            "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            name,
            value,
            format_stamp(now),
        )
        stored = await self.secret(name)
        assert stored is not None  # secrets are never deleted
        return stored

    async def set_secret(self, name: str, value: bytes, now: datetime) -> None:
        """Insert or replace the secret under `name` (key rotation)."""
        await self._write(
            "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
            " created_at = excluded.created_at",
            name,
            value,
            format_stamp(now),
        )

    async def secret_names(self) -> list[str]:
        """The names of every stored secret, sorted."""
        return [r[0] for r in await self._all("SELECT name FROM secrets ORDER BY name")]


class _Trace:
    """Where the pool's statements go while a test watches them."""

    def __init__(self) -> None:
        self.callback: Callable[[str], object] | None = None

    async def attach(self, conn: Any) -> None:
        conn.add_query_logger(self._logged)

    def _logged(self, record: Any) -> None:
        if self.callback is not None:
            self.callback(record.query)


async def _migrate(conn: Any) -> None:
    """Bring the schema up to date; processes starting together wait, and migrate once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_SPACE, _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS vms_schema (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT version FROM vms_schema")
        if version is None:
            await conn.execute("INSERT INTO vms_schema (version) VALUES (0)")
            version = 0
        if version > len(PG_MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this program knows "
                f"({len(PG_MIGRATIONS)}); refusing to touch it"
            )
        for number, script in enumerate(PG_MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute("UPDATE vms_schema SET version = $1", number)
            log.info("database schema migrated to version %d", number)


def _changed(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3' or 'INSERT 0 1'."""
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else 0


def _failure(url: str, exc: BaseException) -> str:
    """Why the database at `url` cannot be used, in words that never hold its password."""
    text = str(exc)
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return f"cannot use PostgreSQL at {where_to(url)}: {type(exc).__name__}: {text}"
