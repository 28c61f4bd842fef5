"""PostgreSQL-only behaviour: several processes' stores on one database (VMS_TEST_DATABASE)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import postgres
from tests.support.processes import worker_port
from vms.admin import with_db
from vms.backup import BackupError, backup, restore
from vms.config import Config
from vms.models import Kind, Status
from vms.store import MIGRATIONS, StoreError
from vms.store.postgres import PgDatabase

pytestmark = pytest.mark.skipif(
    not postgres.wanted(), reason="PostgreSQL-only: runs in the VMS_TEST_DATABASE=postgresql pass"
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Callable[[], object]]:
    """Open another store on this test's database (as another process would); all closed after."""
    async with AsyncExitStack() as stack:

        async def open_one() -> PgDatabase:
            db = await PgDatabase.open(database_url)
            stack.push_async_callback(db.close)
            return db

        yield open_one


async def _jobs(db: PgDatabase, count: int) -> list[int]:
    """`count` queued archive jobs of one user's device; their ids."""
    camera = await db.put_camera(1, "Gate", "camera1", "http://127.0.0.1:9996", NOW)
    user = await db.create_user("alice", "Alice", "x", is_admin=False, now=NOW)
    session = await db.create_session("s1", user.id, "phone", "ios", NOW, NOW + timedelta(days=1))
    made = [
        await db.create_download(
            kind=Kind.ARCHIVE,
            user=user,
            session=session,
            camera=camera,
            range_from=NOW - timedelta(minutes=index + 2),
            range_to=NOW - timedelta(minutes=index + 1),
            status=Status.QUEUED,
            now=NOW,
        )
        for index in range(count)
    ]
    return [d.id for d in made]


async def test_two_processes_claiming_at_once_never_take_the_same_job(stores) -> None:
    """Two stores claiming in a loop share out every job, none twice."""
    first, second = await stores(), await stores()
    ids = await _jobs(first, 40)

    async def claim_all(db: PgDatabase, owner: str) -> list[int]:
        taken: list[int] = []
        while batch := await db.claim_jobs(owner, NOW, LEASE, 3):
            taken += batch
        return taken

    a, b = await asyncio.gather(claim_all(first, "a"), claim_all(second, "b"))
    assert not set(a) & set(b)
    assert sorted(a + b) == ids
    assert a and b  # both got work: skipped, not waited for


async def test_a_lapsed_lease_is_taken_over_and_the_old_holder_writes_nothing(stores) -> None:
    """Another process takes a job only once its lease lapses; the old holder loses it."""
    first, second = await stores(), await stores()
    ids = await _jobs(first, 2)
    assert await first.claim_jobs("a", NOW, LEASE, 10) == ids
    assert await second.claim_jobs("b", NOW + timedelta(seconds=LEASE - 1), LEASE, 10) == []
    later = NOW + timedelta(seconds=LEASE)
    assert await second.claim_jobs("b", later, LEASE, 10) == ids
    assert await first.renew_leases("a", ids, later, LEASE) == set()
    lost = await first.update_download(ids[0], later, held_by="a", status=Status.RUNNING)
    assert lost is None
    assert (await second.download(ids[0])).status == Status.QUEUED
    held = await second.update_download(ids[0], later, held_by="b", status=Status.RUNNING)
    assert held is not None and held.status == Status.RUNNING
    assert await second.renew_leases("b", ids, later, LEASE) == set(ids)
    await second.release_jobs("b", ids)
    assert await first.claim_jobs("a", later, LEASE, 10) == ids


async def test_a_singleton_is_refused_while_held_and_freed_when_its_holder_closes(
    stores,
) -> None:
    """One store holds a role; another is refused until the first one's connection goes."""
    first, second = await stores(), await stores()
    assert await first.try_singleton("cleanup")
    assert await first.try_singleton("cleanup")  # still ours
    assert not await second.try_singleton("cleanup")
    assert await second.try_singleton("demo")  # another role is another lock
    await first.close()
    assert await second.try_singleton("cleanup")
    await second.release_singleton("cleanup")
    third = await stores()
    assert await third.try_singleton("cleanup")


async def test_a_device_lock_lets_one_holder_in_at_a_time(stores) -> None:
    """Two stores' holders of one device's lock never overlap; another device is not held up."""
    first, second = await stores(), await stores()
    inside: list[str] = []
    entered = asyncio.Event()

    async def hold(db: PgDatabase, name: str, device: str) -> None:
        async with db.device_lock(1, device):
            inside.append(f"{name} in")
            entered.set()
            await asyncio.sleep(0.3)
            inside.append(f"{name} out")

    holder = asyncio.create_task(hold(first, "a", "phone"))
    await entered.wait()
    other = asyncio.create_task(hold(second, "c", "tablet"))
    waiter = asyncio.create_task(hold(second, "b", "phone"))
    await asyncio.gather(holder, waiter, other)
    assert inside.index("b in") > inside.index("a out")
    assert inside.index("c in") < inside.index("a out")


async def test_two_processes_starting_together_migrate_once(
    postgres_databases: postgres.Databases, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening an empty database twice at once migrates it once, to the latest version."""
    caplog.set_level(logging.INFO, logger="vms.store.postgres")
    with postgres_databases.fresh(migrated=False) as url:
        dbs = await asyncio.gather(PgDatabase.open(url), PgDatabase.open(url))
        try:
            assert [await db.schema_version() for db in dbs] == [len(MIGRATIONS)] * 2
        finally:
            for db in dbs:
                await db.close()
    migrated = [r for r in caplog.records if "migrated to version" in r.getMessage()]
    assert len(migrated) == len(MIGRATIONS)


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    """A database migrated by a newer program is left alone, with a clear error."""
    db = await PgDatabase.open(database_url)
    try:
        await db._write("UPDATE vms_schema SET version = ?", len(MIGRATIONS) + 1)
    finally:
        await db.close()
    with pytest.raises(StoreError, match="newer than this program knows"):
        await PgDatabase.open(database_url)


async def test_the_password_never_reaches_the_error() -> None:
    """A server that cannot be reached is named in the error, its password is not."""
    url = f"postgresql://vms:hunter2-secret@127.0.0.1:{worker_port()}/vms"
    with pytest.raises(StoreError) as caught:
        await PgDatabase.open(url)
    assert "hunter2" not in str(caught.value)
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/vms" in str(caught.value)


async def test_secrets_keep_the_first_writer_unless_set(stores) -> None:
    """add_secret keeps the value already there; set_secret replaces it; bytes come back."""
    first, second = await stores(), await stores()
    assert await first.secret("app_key") is None
    assert await first.add_secret("app_key", b"\x00one", NOW) == b"\x00one"
    assert await second.add_secret("app_key", b"two", NOW) == b"\x00one"
    await second.set_secret("app_key", b"three", NOW)
    assert await first.secret("app_key") == b"three"
    assert await first.secret_names() == ["app_key"]


def test_backup_refuses_a_postgresql_store(config: Config, tmp_path: Path) -> None:
    """`backup` and `restore` say the database is PostgreSQL's to dump, and write nothing."""
    for command in (backup, restore):
        with pytest.raises(BackupError, match="pg_dump"):
            command(config, tmp_path / "vms.tar.gz")
    assert not (tmp_path / "vms.tar.gz").exists()


async def test_a_command_on_an_unreachable_server_says_where_without_the_password(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """An admin command names the server and database it could not open, not the password."""
    port = worker_port()
    unreachable = dataclasses.replace(
        config, database_url=f"postgresql://vms:hunter2-secret@127.0.0.1:{port}/vms"
    )

    async def never(db: object) -> int:
        raise AssertionError("the store opened")

    assert await with_db(unreachable, never) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot open postgresql://127.0.0.1:{port}/vms: ")
    assert "hunter2" not in error and len(error.splitlines()) == 1
