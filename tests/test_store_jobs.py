"""The store's side of sharing work: job claims and leases, one-at-a-time roles, secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vms.models import Kind, Status
from vms.store import Database

NOW = datetime(2026, 11, 23, 10, 20, 0, tzinfo=UTC)
LEASE = 30.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh SQLite store with one user, session and camera."""
    store = await Database.open(tmp_path / "vms.sqlite3")
    user = await store.create_user("alice", "Alice", "hash", is_admin=False, now=NOW)
    await store.put_camera(1, "Gate", "camera1", "http://127.0.0.1:9996", NOW)
    await store.create_session("s1", user.id, "phone", "ios-cctv", NOW, NOW + timedelta(days=1))
    yield store
    await store.close()


async def _archives(db: Database, count: int, status: Status = Status.QUEUED) -> list[int]:
    user, session, camera = await db.user(1), await db.session("s1"), await db.camera(1)
    assert user is not None and session is not None and camera is not None
    made = []
    for n in range(count):
        download = await db.create_download(
            kind=Kind.ARCHIVE,
            user=user,
            session=session,
            camera=camera,
            range_from=NOW - timedelta(minutes=10 + n),
            range_to=NOW - timedelta(minutes=9 + n),
            status=status,
            now=NOW,
        )
        made.append(download.id)
    return made


async def test_claims_take_the_oldest_free_jobs_up_to_the_limit(db: Database) -> None:
    """Claims hand out queued and running jobs oldest first, each to one owner only."""
    ids = await _archives(db, 3)
    await db.update_download(ids[1], NOW, status=Status.RUNNING)
    assert await db.claim_jobs("a", NOW, LEASE, 2) == ids[:2]
    assert await db.claim_jobs("b", NOW, LEASE, 5) == ids[2:]
    assert await db.claim_jobs("c", NOW, LEASE, 5) == []
    assert await db.claim_jobs("c", NOW, LEASE, 0) == []


@pytest.mark.parametrize("status", [Status.READY, Status.FAILED, Status.CANCELLED])
async def test_finished_archives_and_history_records_are_never_claimed(
    db: Database, status: Status
) -> None:
    """Only pending archives are jobs: not finished ones, nor thick-client history."""
    await _archives(db, 1, status)
    user, session, camera = await db.user(1), await db.session("s1"), await db.camera(1)
    assert user is not None and session is not None and camera is not None
    await db.create_download(
        kind=Kind.LINK, user=user, session=session, camera=camera, range_from=NOW,
        range_to=NOW + timedelta(minutes=1), status=Status.READY, now=NOW,
    )  # fmt: skip
    assert await db.claim_jobs("a", NOW, LEASE, 5) == []


async def test_a_lapsed_lease_is_claimed_again_and_the_old_owner_loses_it(db: Database) -> None:
    """Past its lease a job goes to the next claimant; the old owner can renew it no more."""
    (job,) = await _archives(db, 1)
    assert await db.claim_jobs("a", NOW, LEASE, 1) == [job]
    assert await db.claim_jobs("b", NOW + timedelta(seconds=LEASE - 1), LEASE, 1) == []
    later = NOW + timedelta(seconds=LEASE)
    assert await db.claim_jobs("b", later, LEASE, 1) == [job]
    assert await db.renew_leases("a", [job], later, LEASE) == set()
    assert await db.renew_leases("b", [job], later, LEASE) == {job}


async def test_renewing_moves_the_lease_forward(db: Database) -> None:
    """A renewed lease holds from the renewal on, so the job is not claimed where it would
    have lapsed."""
    (job,) = await _archives(db, 1)
    await db.claim_jobs("a", NOW, LEASE, 1)
    halfway = NOW + timedelta(seconds=LEASE / 2)
    assert await db.renew_leases("a", [job], halfway, LEASE) == {job}
    assert await db.claim_jobs("b", NOW + timedelta(seconds=LEASE), LEASE, 1) == []
    assert await db.claim_jobs("b", halfway + timedelta(seconds=LEASE), LEASE, 1) == [job]


async def test_a_finished_or_cancelled_job_is_not_renewed(db: Database) -> None:
    """Renewal answers only the jobs still pending: a cancelled one is missing from it."""
    first, second = await _archives(db, 2)
    await db.claim_jobs("a", NOW, LEASE, 2)
    await db.update_download(first, NOW, status=Status.CANCELLED)
    assert await db.renew_leases("a", [first, second], NOW, LEASE) == {second}
    assert await db.renew_leases("a", [], NOW, LEASE) == set()


async def test_released_jobs_can_be_claimed_at_once(db: Database) -> None:
    """Released jobs are free before their lease would lapse; others' holds stay."""
    first, second = await _archives(db, 2)
    await db.claim_jobs("a", NOW, LEASE, 1)
    await db.claim_jobs("b", NOW, LEASE, 1)
    await db.release_jobs("a", [first, second])
    assert await db.claim_jobs("c", NOW, LEASE, 5) == [first]


async def test_a_held_update_is_written_only_by_the_holder(db: Database) -> None:
    """With `held_by`, the holder's update is written; anyone else's is not, and gets None."""
    (job,) = await _archives(db, 1)
    await db.claim_jobs("a", NOW, LEASE, 1)
    assert await db.update_download(job, NOW, held_by="b", status=Status.RUNNING) is None
    unchanged = await db.download(job)
    assert unchanged is not None and unchanged.status == Status.QUEUED
    running = await db.update_download(job, NOW, held_by="a", status=Status.RUNNING, progress=5)
    assert running is not None and running.status == Status.RUNNING and running.progress == 5
    assert (await db.archive_counts()).get(Status.RUNNING) == 1


async def test_a_role_is_held_by_one_store_at_a_time_and_freed_by_close(tmp_path: Path) -> None:
    """Two stores on one file: the first to ask holds the role until it lets go or closes."""
    first = await Database.open(tmp_path / "vms.sqlite3")
    second = await Database.open(tmp_path / "vms.sqlite3")
    try:
        assert await first.try_singleton("cleanup")
        assert await first.try_singleton("cleanup")  # asking again while holding it
        assert not await second.try_singleton("cleanup")
        assert await second.try_singleton("demo-recorder")
        await first.release_singleton("cleanup")
        assert await second.try_singleton("cleanup")
        await second.close()
        assert await first.try_singleton("cleanup")
        assert await first.try_singleton("demo-recorder")
    finally:
        await first.close()


async def test_the_device_lock_lets_the_holder_through(db: Database) -> None:
    """One process on the file: the device lock is taken at once, again and again."""
    for _ in range(2):
        async with db.device_lock(1, "phone"):
            assert await db.count_pending(1, "phone") == 0


async def test_the_first_secret_written_wins_and_set_replaces(db: Database) -> None:
    """add_secret keeps what is there; set_secret replaces it; names are listed sorted."""
    assert await db.secret("signing") is None
    assert await db.add_secret("signing", b"first", NOW) == b"first"
    assert await db.add_secret("signing", b"second", NOW) == b"first"
    assert await db.secret("signing") == b"first"
    await db.set_secret("signing", b"rotated", NOW)
    await db.set_secret("app", b"\x00\xff", NOW)
    assert await db.secret("signing") == b"rotated"
    assert await db.secret("app") == b"\x00\xff"
    assert await db.secret_names() == ["app", "signing"]
