"""The SQLite file: WAL, schema version, idempotent migrations, refusal of a newer schema."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vms.store import MIGRATIONS, Conflict, Database, StoreError

NOW = datetime(2026, 11, 23, 10, 20, 0, tzinfo=UTC)


def _pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


async def test_new_file_is_wal_with_the_current_schema_version(tmp_path: Path) -> None:
    """A new database is in WAL mode and at schema version len(MIGRATIONS)."""
    path = tmp_path / "vms.sqlite3"
    db = await Database.open(path)
    try:
        assert await db.schema_version() == len(MIGRATIONS)
    finally:
        await db.close()
    assert _pragma(path, "journal_mode") == "wal"
    assert _pragma(path, "user_version") == len(MIGRATIONS)
    assert {"users", "cameras", "sessions", "downloads"} <= _tables(path)


async def test_missing_parent_directory_is_created(tmp_path: Path) -> None:
    """Opening a database in a directory that does not exist yet creates the directory."""
    path = tmp_path / "a" / "b" / "vms.sqlite3"
    db = await Database.open(path)
    await db.close()
    assert path.exists()


async def test_reopening_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    """Opening the same file again runs no migration twice and loses nothing."""
    path = tmp_path / "vms.sqlite3"
    db = await Database.open(path)
    user = await db.create_user("alice", "Alice", "hash", is_admin=False, now=NOW)
    await db.put_camera(1, "Gate", "camera1", "http://127.0.0.1:9996", NOW)
    await db.grant(user.id, 1)
    await db.close()
    for _ in range(3):
        db = await Database.open(path)
        try:
            assert await db.schema_version() == len(MIGRATIONS)
            assert [u.login for u in await db.users()] == ["alice"]
            assert await db.grants(user.id) == [1]
            assert [c.name for c in await db.cameras()] == ["Gate"]
        finally:
            await db.close()
    assert _pragma(path, "user_version") == len(MIGRATIONS)


async def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A file from a newer program version is refused with a clear error and not modified."""
    with warnings.catch_warnings():  # garbage other tests left must not count as this one's
        warnings.simplefilter("ignore")
        gc.collect()
    path = tmp_path / "vms.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError) as caught:
        await Database.open(path)
    assert "newer" in str(caught.value)
    # A refused open must not leak its connection. Collect now, recording warnings instead of
    # raising them: aiosqlite stops a leaked connection's worker thread only after its
    # ResourceWarning returns, and a thread left running would hang the interpreter at exit.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del caught
        gc.collect()
    leaks = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"Database.open leaked its connection after refusing: {leaks}"
    assert _pragma(path, "user_version") == len(MIGRATIONS) + 1
    assert _tables(path) == {"future"}


async def test_an_older_version_is_migrated_up(tmp_path: Path) -> None:
    """A file at version 0 (empty) is brought up to the current version in one open."""
    path = tmp_path / "vms.sqlite3"
    sqlite3.connect(path).close()
    assert _pragma(path, "user_version") == 0
    db = await Database.open(path)
    await db.close()
    assert _pragma(path, "user_version") == len(MIGRATIONS)


@pytest.mark.parametrize("second", ["alice", "ALICE", "Alice"])
async def test_duplicate_login_is_a_conflict(tmp_path: Path, second: str) -> None:
    """Logins are unique regardless of letter case."""
    db = await Database.open(tmp_path / "vms.sqlite3")
    try:
        await db.create_user("alice", "Alice", "hash", is_admin=False, now=NOW)
        with pytest.raises(Conflict):
            await db.create_user(second, "Other", "hash", is_admin=False, now=NOW)
        assert await db.count_users() == 1
    finally:
        await db.close()


async def test_two_connections_see_each_others_writes(tmp_path: Path) -> None:
    """Two openers of one file (the CLI beside a running server) share data through WAL."""
    path = tmp_path / "vms.sqlite3"
    first = await Database.open(path)
    second = await Database.open(path)
    try:
        await first.create_user("alice", "Alice", "hash", is_admin=False, now=NOW)
        assert [u.login for u in await second.users()] == ["alice"]
    finally:
        await first.close()
        await second.close()


async def test_a_lookup_is_answered_while_a_long_read_is_running(tmp_path: Path) -> None:
    """Reads have connections of their own: one held mid-query does not hold up another."""
    db = await Database.open(tmp_path / "vms.sqlite3")
    release = threading.Event()
    try:
        user = await db.create_user("alice", "Alice", "hash", is_admin=False, now=NOW)
        for conn in db._readers:  # a query that runs until the test lets it finish
            await conn.create_function("held", 0, lambda: release.wait(10))
        long_read = asyncio.create_task(db._all("SELECT held()"))
        await asyncio.sleep(0.1)
        found = await asyncio.wait_for(db.user(user.id), timeout=5)
        assert found is not None and found.login == "alice"
        assert not long_read.done()
    finally:
        release.set()
        await asyncio.gather(long_read, return_exceptions=True)
        await db.close()
