"""Archive jobs worked by several workers over one database, as by several processes.

Each worker here has what a process has of its own: a store connection that says it is
shared, a directory of archive files and an owner name; the device hears all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.badserver import BadMediaServer
from tests.support.service import PHONE, Client, sql_rows
from vms import appkeys
from vms.archive.actions import ArchiveActions
from vms.archive.fetcher import FetchLimits
from vms.archive.files import ArchiveFiles
from vms.archive.manifest import sign_manifest
from vms.archive.mediaclient import MediaClient
from vms.archive.worker import ArchiveWorker, WorkerSettings
from vms.config import Config
from vms.dates import utcnow
from vms.models import Kind, Status
from vms.resources import Resources
from vms.store import Store, open_store

LEASE = 3.0


class Device:
    """What the phone hears, from whichever worker: every event, in order."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def publish(self, channel: str, event: str, data: Mapping[str, Any]) -> int:
        """Hear an event."""
        self.events.append(data)
        return 1

    def send_to_socket(
        self, socket_id: str, channel: str, event: str, data: Mapping[str, Any]
    ) -> bool:
        """Hear an event sent to this socket."""
        self.events.append(data)
        return True

    def generated(self, download_id: int) -> list[str]:
        """The status of each `archive_generated` heard for this archive."""
        return [
            e["data"]["download"]["status"]
            for e in self.events
            if e["type"] == "archive_generated" and e["data"]["download"]["id"] == download_id
        ]


@dataclasses.dataclass
class Side:
    """One worker with its own store connection and files, like one process."""

    db: Store
    files: ArchiveFiles
    worker: ArchiveWorker


@dataclasses.dataclass
class World:
    """The workers of a test, the device they push to and the phone's session."""

    make: Callable[[str], Awaitable[Side]]
    device: Device
    server: BadMediaServer
    session_id: str
    user_id: int

    async def queue(self, side: Side, count: int = 1) -> list[int]:
        """Archives of camera 1 queued through `side`, as a request to its process would."""
        db = side.db
        user, session, camera = (
            await db.user(self.user_id),
            await db.session(self.session_id),
            await db.camera(1),
        )
        assert user is not None and session is not None and camera is not None
        start = utcnow() - timedelta(minutes=30)
        ids = []
        for n in range(count):
            download = await db.create_download(
                kind=Kind.ARCHIVE,
                user=user,
                session=session,
                camera=camera,
                range_from=start + timedelta(minutes=n),
                range_to=start + timedelta(minutes=n, seconds=30),
                status=Status.QUEUED,
                now=utcnow(),
            )
            ids.append(download.id)
            side.worker.enqueue(download.id)
        return ids


@pytest.fixture
async def world(
    service: Client, bad_camera: BadMediaServer, config: Config, tmp_path: Path
) -> AsyncIterator[World]:
    """A factory of started workers over the service's database, and the phone they push to."""
    app = service.app
    # The workers made here stand for the site's processes; the service's own would claim
    # their jobs too where the store is shared.
    await app[appkeys.WORKER].stop()
    keystore, links = app[appkeys.KEYSTORE], app[appkeys.LINKS]
    device = Device()
    sides: list[Side] = []
    now = utcnow()
    session = await app[appkeys.DB].create_session(
        "lease-session", 1, PHONE, "ios-cctv", now, now + timedelta(days=1)
    )
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        media = MediaClient(http, links.token)

        async def make(owner: str) -> Side:
            # Its own connections to the service's store, as another process has; on SQLite,
            # marked shared so that it polls for jobs as a process of a site does.
            db = await open_store(config)
            db.shared = True
            files = ArchiveFiles(tmp_path / owner, app[appkeys.URLS], keystore.url_secret)
            settings = WorkerSettings(
                concurrency=2,
                attempts=2,
                backoff=0.05,
                limits=FetchLimits(read_timeout=2.0, min_free_disk=0),
                lease=LEASE,
            )
            worker = ArchiveWorker(
                settings,
                db,
                files,
                http,
                media,
                links,
                Resources(config.tz, files, links),
                device,
                lambda claims: sign_manifest(claims, keystore.signing_key, keystore.kid),
                owner=owner,
            )
            await worker.start()
            side = Side(db, files, worker)
            sides.append(side)
            return side

        yield World(make, device, bad_camera, session.id, session.user_id)
        for side in sides:
            await side.worker.stop()
            await side.db.close()


def _kill(side: Side) -> None:
    """What kill -9 leaves of a worker: its tasks end where they are and nothing is let go."""
    for task in (*side.worker._loops, *side.worker._running.values()):
        task.cancel()
    side.worker._loops = []


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _status(side: Side, download_id: int) -> Status:
    download = await side.db.download(download_id)
    assert download is not None
    return download.status


def _partials(side: Side) -> list[str]:
    return sorted(p.name for p in side.files.root.glob("*.part"))


async def test_two_workers_never_work_the_same_job(world: World) -> None:
    """Six archives queued through two workers: each is fetched once, by one of them, and
    the device hears each ready once."""
    a, b = await world.make("a"), await world.make("b")
    ids = await world.queue(a, 3) + await world.queue(b, 3)

    async def all_ready() -> bool:
        return all([await _status(a, i) == Status.READY for i in ids])

    await _until(all_ready)
    assert world.server.get_requests == len(ids)
    for download_id in ids:
        assert world.device.generated(download_id) == ["ready"]
        on_disk = [side for side in (a, b) if side.files.exists(download_id)]
        assert len(on_disk) == 1
        download = await a.db.download(download_id)
        assert download is not None and download.attempts == 1


async def test_a_killed_worker_s_job_is_finished_by_another_and_pushed_once(
    world: World,
) -> None:
    """A worker dies mid-fetch without letting go: once its lease lapses the other worker
    takes the job, finishes it, and the device hears it ready exactly once."""
    world.server.mode = "trickle"
    a = await world.make("a")
    (download_id,) = await world.queue(a)

    async def a_is_fetching() -> bool:
        return await _status(a, download_id) == Status.RUNNING and bool(_partials(a))

    await _until(a_is_fetching)
    _kill(a)
    world.server.mode = "ok"
    b = await world.make("b")

    async def ready() -> bool:
        return await _status(b, download_id) == Status.READY

    await _until(ready)
    assert b.files.exists(download_id) and not a.files.exists(download_id)
    assert world.device.generated(download_id) == ["ready"]
    download = await b.db.download(download_id)
    assert download is not None and download.attempts == 2  # one by a, one by b


async def test_a_job_cancelled_through_another_process_stops_where_it_runs(
    world: World, service: Client
) -> None:
    """Cancelled through b while a fetches it: a stops (its partial file goes), the
    archive stays cancelled, and the device hears only the cancel."""
    world.server.mode = "trickle"
    a, b = await world.make("a"), await world.make("b")
    (download_id,) = await world.queue(a)

    async def a_is_fetching() -> bool:
        return await _status(a, download_id) == Status.RUNNING and bool(_partials(a))

    await _until(a_is_fetching)
    heard = len(world.device.events)
    user = await b.db.user(world.user_id)
    assert user is not None
    cancelled = await ArchiveActions(b.db, b.files, b.worker).remove(user, download_id)
    assert cancelled.status == Status.CANCELLED

    async def a_stopped() -> bool:
        return not _partials(a)

    await _until(a_stopped, timeout=LEASE * 2)
    await asyncio.sleep(LEASE)
    assert await _status(a, download_id) == Status.CANCELLED
    assert [e["type"] for e in world.device.events[heard:]] == ["archive_generated"]
    assert world.device.generated(download_id) == ["cancelled"]


async def test_a_worker_that_lost_its_lease_writes_nothing_more(world: World) -> None:
    """Another owner takes the job over (a's lease given up for lapsed): a stops at once,
    and neither the archive's row nor the device hears from a again."""
    world.server.mode = "trickle"
    a = await world.make("a")
    (download_id,) = await world.queue(a)

    async def a_progressed() -> bool:
        download = await a.db.download(download_id)
        return download is not None and download.progress > 0

    await _until(a_progressed)
    later = utcnow() + timedelta(seconds=LEASE * 2)
    assert await a.db.claim_jobs("elsewhere", later, 60.0, 10) == [download_id]
    before = await a.db.download(download_id)
    heard = len(world.device.events)

    async def a_stopped() -> bool:
        return not _partials(a)

    await _until(a_stopped, timeout=LEASE * 2)
    await asyncio.sleep(LEASE * 1.5)
    assert await a.db.download(download_id) == before
    assert world.device.events[heard:] == []
    assert await a.db.renew_leases("elsewhere", [download_id], utcnow(), 60.0) == {download_id}


async def test_a_worker_holds_no_more_jobs_than_it_has_slots(world: World) -> None:
    """Three archives for a worker of two slots: two run, the third stays queued and free
    for any other process to claim."""
    world.server.mode = "trickle"
    a = await world.make("a")
    first, second, third = await world.queue(a, 3)

    async def two_running() -> bool:
        return [await _status(a, i) for i in (first, second)] == [Status.RUNNING] * 2

    await _until(two_running)
    await asyncio.sleep(LEASE)
    holders = await sql_rows(a.db, "SELECT id, status, claimed_by FROM downloads ORDER BY id")
    assert await _status(a, third) == Status.QUEUED, holders
    assert await a.db.claim_jobs("elsewhere", utcnow(), 60.0, 10) == [third]
