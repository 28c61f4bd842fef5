"""Purging 10,000 expired archives with purge_expired while watching event-loop lag, one run.

Usage: python bench/cleanup.py [--archives 10000] [--file-kb 64]

Builds a real DATA directory in a temp dir: the store (the SQLite file in DATA, or with
VMS_DATABASE_URL that PostgreSQL database, which must be empty) with `--archives` ready
archives whose lifetime is over, and their real files in DATA/archives.
A ticker task asks to wake every 5 ms and records how late it wakes. Three phases, each
measured the same way:
1. idle: the ticker alone for a second (the loop's own lateness);
2. baseline: deleting the same number of files (a second set) with a plain `os.unlink` loop
   on the event loop, as a naive cleanup would;
3. purge_expired(db, files, now): the service's cleanup, DB reads and writes included.
Prints the time each took and the ticker's worst and p99 lateness, with ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vms.archive.cleanup import purge_expired  # noqa: E402
from vms.archive.files import ArchiveFiles  # noqa: E402
from vms.config import Config  # noqa: E402
from vms.models import Kind, Status  # noqa: E402
from vms.store import Store, open_store  # noqa: E402
from vms.urls import Urls  # noqa: E402

TICK = 0.005


class Ticker:
    """A task that sleeps TICK at a time and records how late each wake-up is, in ms."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + TICK
            await asyncio.sleep(TICK)
            self.late.append(max(0.0, time.perf_counter() - due) * 1000)

    async def measure(self, work: Callable[[], Awaitable[object]]) -> tuple[float, list[float]]:
        """Run `work` with the ticker going: (seconds it took, lateness samples)."""
        self.late = []
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.05)  # the ticker is running before the work starts
        started = time.perf_counter()
        try:
            await work()
        finally:
            elapsed = time.perf_counter() - started
            await asyncio.sleep(TICK * 2)  # the tick that was delayed by the work's end
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return elapsed, self.late


def write_files(root: Path, names: list[str], size: int) -> None:
    """Real files of `size` bytes each, flushed to disk."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(size)
    for name in names:
        with open(root / name, "wb") as handle:
            handle.write(block)
    os.sync()


async def seed(db: Store, count: int, now: datetime) -> list[int]:
    """`count` ready archives whose lifetime ended an hour ago; their ids."""
    await db.put_camera(1, "Gate", "camera1", "http://127.0.0.1:9", now)
    camera = await db.camera(1)
    user = await db.create_user("bench", "Bench", "x", is_admin=True, now=now)
    session = await db.create_session("s" * 80, user.id, "bench-phone", "ios-cctv", now, now)
    assert camera is not None
    ids: list[int] = []
    start = now - timedelta(days=1)
    for index in range(0, count, 500):
        created = await asyncio.gather(
            *(
                db.create_download(
                    kind=Kind.ARCHIVE,
                    user=user,
                    session=session,
                    camera=camera,
                    range_from=start + timedelta(minutes=n),
                    range_to=start + timedelta(minutes=n + 5),
                    status=Status.QUEUED,
                    now=now - timedelta(hours=4),
                )
                for n in range(index, min(count, index + 500))
            )
        )
        ids += [download.id for download in created]
    expired = now - timedelta(hours=1)
    for download_id in ids:
        await db.update_download(
            download_id, now - timedelta(hours=4), status=Status.READY, expires_at=expired
        )
    return ids


def summary(late: list[float]) -> str:
    """Worst and p99 lateness of a phase."""
    ordered = sorted(late)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0
    return f"max {ordered[-1] if ordered else 0:6.1f} ms, p99 {p99:5.1f} ms, {len(late)} ticks"


async def run(work: Path, count: int, size: int) -> None:
    """The benchmark proper, inside a temporary directory."""
    data = work / "data"
    now = datetime.now(UTC)
    config = Config(data_dir=data, database_url=os.environ.get("VMS_DATABASE_URL", ""))
    db = await open_store(config)
    try:
        started = time.perf_counter()
        ids = await seed(db, count, now)
        files = ArchiveFiles(data / "archives", Urls("http://127.0.0.1:8080", {}), b"bench-secret")
        write_files(files.root, [files.path(i).name for i in ids], size)
        plain_dir = work / "plain"
        write_files(plain_dir, [f"{n}.mp4" for n in range(count)], size)
        print(
            f"seeded {count} expired archives and {2 * count} files of {size // 1024} KiB "
            f"in {time.perf_counter() - started:.1f} s"
        )
        ticker = Ticker()
        _, idle = await ticker.measure(lambda: asyncio.sleep(1.0))

        async def unlink_all() -> None:
            for name in os.listdir(plain_dir):
                os.unlink(plain_dir / name)

        plain_seconds, plain_late = await ticker.measure(unlink_all)
        removed: list[int] = []

        async def purge() -> None:
            removed.append(await purge_expired(db, files, now))

        purge_seconds, purge_late = await ticker.measure(purge)
        left = len(os.listdir(files.root))
        statuses = await db.archive_statuses()
        assert removed == [count] and left == 0, (removed, left)
        assert not statuses, "every archive reads expired"
    finally:
        await db.close()
    print(f"{count} files, ticker every {TICK * 1000:.0f} ms (lateness = how late it woke):")
    print(f"  idle loop, 1 s:                       {summary(idle)}")
    print(f"  plain os.unlink loop on the loop:     {plain_seconds:6.2f} s  {summary(plain_late)}")
    print(f"  purge_expired (files + DB):           {purge_seconds:6.2f} s  {summary(purge_late)}")
    print(
        f"  purge_expired worst lag {max(purge_late):.1f} ms (target < 20 ms); "
        f"{max(purge_late) / max(plain_late):.3f}x the plain loop's, "
        f"{max(purge_late) / max(max(idle), 0.1):.1f}x idle"
    )
    print(
        f"  time: purge_expired / plain unlink loop = {purge_seconds / plain_seconds:.2f}x; "
        f"median tick lateness while purging {statistics.median(purge_late):.2f} ms"
    )


def main() -> None:
    """Parse arguments, run in a temp dir, clean up."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--archives", type=int, default=10_000)
    parser.add_argument("--file-kb", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cleanup-"))
    try:
        asyncio.run(run(work, args.archives, args.file_kb * 1024))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
