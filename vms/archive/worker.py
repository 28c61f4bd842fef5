"""The archive queue: a bounded pool of workers that fetch, retry and record each job's state.

Jobs live in the database and any process may work them: a worker claims a job, which holds
it under a lease that the worker renews while it works; a job whose worker died is claimed
again once its lease lapses, and a worker that lost a job (cancelled, taken over) stops it
without writing. Every change of state is written first, only while the worker holds the job,
and announced after, with the row as written: so the device hears of each change once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aiohttp

from vms.archive import events
from vms.archive.events import Publisher
from vms.archive.fetcher import (
    NOT_FOUND_MESSAGE,
    Fetched,
    FetchError,
    FetchLimits,
    Piece,
    fetch_archive,
)
from vms.archive.files import ArchiveFiles
from vms.archive.links import MediaLinks
from vms.archive.manifest import manifest_claims
from vms.archive.mediaclient import MediaClient, MediaUnavailable, Span
from vms.archive.poster import make_poster
from vms.audit import audit_download
from vms.dates import utcnow
from vms.logs import log_unexpected
from vms.metrics import Metrics
from vms.models import PENDING, Download, Status
from vms.resources import Resources
from vms.store import Store
from vms.threads import run_blocking
from vms.urls import media_get

log = logging.getLogger(__name__)

# Most recorded spans one archive is made of (each costs a /get for its header and one for it).
MAX_SPANS = 1000

# Signs a manifest's claims: the compact JWS.
ManifestSigner = Callable[[Mapping[str, Any]], str]

# How often a worker on a shared store looks for jobs that other processes queued or left
# behind (its own are started at once).
POLL_INTERVAL = 1.0
# Later than any lease: claiming "then" takes every job, whatever its lease says.
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def worker_owner() -> str:
    """A name for one worker no other has: host, process and a random part (pids come back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class _LostJob(Exception):
    """The job is no longer this worker's (cancelled, or another worker holds it now)."""


@dataclass(frozen=True)
class WorkerSettings:
    """How many jobs run at once, how long archives are kept, how hard a fetch is retried."""

    concurrency: int = 2
    archive_ttl: float = 3 * 3600.0
    attempts: int = 4
    backoff: float = 2.0
    limits: FetchLimits = field(default_factory=FetchLimits)
    # A claimed job is held this long unless renewed; the worker renews every third of it.
    lease: float = 30.0


class ArchiveWorker:
    """Works queued archives: fetch with retries, then ready or failed, each state pushed."""

    def __init__(
        self,
        settings: WorkerSettings,
        db: Store,
        files: ArchiveFiles,
        http: aiohttp.ClientSession,
        media: MediaClient,
        links: MediaLinks,
        resources: Resources,
        publisher: Publisher,
        sign_manifest: ManifestSigner,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
        owner: str | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._files = files
        self._http = http
        self._media = media
        self._sign_manifest = sign_manifest
        self._links = links
        self._resources = resources
        self._publisher = publisher
        self._clock = clock
        # Who holds the jobs this worker claims, in the store.
        self.owner = owner or worker_owner()
        # Set when there may be a job to claim: one queued here, a slot freed.
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[int, asyncio.Task[None]] = {}
        # Jobs writing their last state: that write says itself whether they are still ours.
        self._finishing: set[int] = set()
        self.metrics = metrics or Metrics()
        # When each running job started (monotonic), for the job duration.
        self._started: dict[int, float] = {}

    async def start(self) -> None:
        """Resume what a previous run left (partial files go), then claim and work jobs."""
        self._files.root.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(None, self._files.remove_partials)
        if removed:
            log.info("removed %d partial archive files left by the previous run", removed)
        if not self._db.shared:
            await self._take_back()
        self._loops = [
            asyncio.create_task(self._claim_forever(), name="archive-claims"),
            asyncio.create_task(self._renew_forever(), name="archive-leases"),
        ]
        self._wake.set()

    async def _take_back(self) -> None:
        """Alone on the store, every job left queued or running is a previous run's: its lease
        is a dead process's, so it is claimed whatever that says and let go again, to be
        claimed in order as slots free up."""
        left = await self._db.archives_in([Status.RUNNING, Status.QUEUED])
        taken = await self._db.claim_jobs(self.owner, _END_OF_TIME, 0.0, len(left))
        for download in left:
            if download.status == Status.RUNNING:
                await self._db.update_download(
                    download.id,
                    self._clock(),
                    held_by=self.owner,
                    status=Status.QUEUED,
                    progress=0,
                )
        await self._db.release_jobs(self.owner, taken)
        if taken:
            log.info("resuming %d archive jobs", len(taken))

    async def stop(self) -> None:
        """Stop claiming and working; interrupted jobs are let go, to resume here or anywhere."""
        held, tasks = list(self._running), [*self._loops, *self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops = []
        try:
            await self._db.release_jobs(self.owner, held)
        except Exception as exc:  # their leases lapse instead
            log_unexpected(log, "letting go of archive jobs", exc)

    def enqueue(self, download_id: int) -> None:
        """A job recorded as queued: claim it (and whatever else waits) now."""
        self._wake.set()

    def announce(self, download: Download) -> None:
        """Tell the download's device session where it stands now (`archive_generated`)."""
        self._publisher.publish(
            events.token_channel(download.session_id),
            events.EVENT,
            events.archive_generated(self._resources.download(download), download.message),
        )

    async def cancel(self, download_id: int) -> None:
        """Stop the job if it is running and wait (at most a second) until it has let go.

        The fetch's own clean-up removes its partial file; the caller records the new state.
        A queued job that was not started is skipped by the worker once its row says so.
        """
        job = self._running.get(download_id)
        if job is None:
            return
        job.cancel()
        await asyncio.wait({job}, timeout=1.0)

    async def _claim_forever(self) -> None:
        """Claim jobs for the free slots whenever woken (and, on a shared store, every poll)."""
        while True:
            if self._db.shared:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            else:
                await self._wake.wait()
            self._wake.clear()
            free = self._settings.concurrency - len(self._running)
            if free <= 0:
                continue
            claim = asyncio.ensure_future(
                self._db.claim_jobs(self.owner, self._clock(), self._settings.lease, free)
            )
            try:
                taken = await asyncio.shield(claim)
            except asyncio.CancelledError:  # stopping: what the claim took is let go at once
                with contextlib.suppress(Exception):
                    await self._db.release_jobs(self.owner, await claim)
                raise
            except Exception as exc:  # the store is away: try again in a while
                log_unexpected(log, "claiming archive jobs", exc)
                await asyncio.sleep(POLL_INTERVAL)
                self._wake.set()
                continue
            for download_id in taken:
                # Each job is its own task, so one archive can be cancelled without the worker.
                job = asyncio.create_task(self._guarded(download_id), name=f"archive-{download_id}")
                self._running[download_id] = job
                job.add_done_callback(partial(self._ended, download_id))

    def _ended(self, download_id: int, job: asyncio.Task[None]) -> None:
        if self._running.get(download_id) is job:
            del self._running[download_id]
        self._wake.set()  # a slot is free

    async def _renew_forever(self) -> None:
        """Keep the leases of running jobs; stop the jobs whose lease is no longer ours."""
        while True:
            await asyncio.sleep(self._settings.lease / 3)
            held = set(self._running)
            if not held:
                continue
            try:
                kept = await self._db.renew_leases(
                    self.owner, held, self._clock(), self._settings.lease
                )
            except Exception as exc:  # if this goes on, the leases lapse and others take over
                log_unexpected(log, "renewing archive job leases", exc)
                continue
            for download_id in held - kept - self._finishing:
                job = self._running.get(download_id)
                if job is not None:
                    log.info("archive %d: cancelled or taken over elsewhere; stopped", download_id)
                    job.cancel()

    async def _guarded(self, download_id: int) -> None:
        self._started[download_id] = time.monotonic()
        try:
            await self._run(download_id)
        except asyncio.CancelledError:
            raise
        except _LostJob:
            log.info("archive %d: cancelled or taken over elsewhere; stopped", download_id)
        except Exception as exc:  # one broken job must not take the worker down
            log_unexpected(log, f"archive {download_id}", exc)
            await self._fail(download_id, events.FAILED_MESSAGE)
        finally:
            self._started.pop(download_id, None)
            self._finishing.discard(download_id)

    def _elapsed(self, download_id: int) -> float | None:
        started = self._started.get(download_id)
        return None if started is None else time.monotonic() - started

    async def _run(self, download_id: int) -> None:
        download = await self._db.download(download_id)
        if download is None or download.status not in PENDING:
            return
        settings = self._settings
        first = download.attempts + 1
        for attempt in range(first, first + settings.attempts):
            running = await self._db.update_download(
                download_id,
                self._clock(),
                expect=PENDING,
                held_by=self.owner,
                status=Status.RUNNING,
                attempts=attempt,
                progress=0,
            )
            if running is None or running.status != Status.RUNNING:
                return  # gone, cancelled or taken over meanwhile
            self._progress(running, 0)
            try:
                fetched = await self._fetch(running)
            except FetchError as exc:
                log.warning("archive %d attempt %d: %s", download_id, attempt, exc.message)
                if not exc.retryable or attempt >= first + settings.attempts - 1:
                    await self._fail(download_id, exc.message)
                    return
                await asyncio.sleep(settings.backoff * 2 ** (attempt - 1))
                continue
            await self._ready(running, fetched)
            return

    async def _fetch(self, download: Download) -> Fetched:
        token = self._links.token(download.camera_path, download.range_from, download.range_to)
        spans = await self._recorded(download)
        pieces = [
            Piece(
                media_get(
                    download.media_server_url,
                    download.camera_path,
                    span.start,
                    span.duration,
                    fmt="mp4" if len(spans) == 1 else "fmp4",
                ),
                span.start,
                span.duration,
            )
            for span in spans
        ]
        percent = 0

        async def on_progress(share: float) -> None:
            nonlocal percent
            now = min(99, int(share * 100))
            if now <= percent:
                return
            percent = now
            current = await self._db.update_download(
                download.id,
                self._clock(),
                expect={Status.RUNNING},
                held_by=self.owner,
                progress=now,
            )
            if current is None or current.status != Status.RUNNING:
                raise _LostJob
            self._progress(current, now)

        return await fetch_archive(
            self._http,
            pieces,
            token,
            self._files.partial_path(download.id),
            self._files.local_path(download.id),
            self._settings.limits,
            on_progress,
            self._files.upload(download.id),
        )

    async def _recorded(self, download: Download) -> list[Span]:
        """The recorded spans of the range, as the media server lists them now.

        MediaMTX's /get stops at the first gap, so each is fetched on its own.
        """
        try:
            listed = await self._media.recorded(
                download.media_server_url,
                download.camera_path,
                download.range_from,
                download.range_to,
                fresh=True,
            )
        except MediaUnavailable:
            raise FetchError("The media server could not be reached.", retryable=True) from None
        spans = list(listed)
        if not spans:
            raise FetchError(NOT_FOUND_MESSAGE, retryable=False)
        if len(spans) > MAX_SPANS:  # two requests each: a reply like this is not a recording
            raise FetchError(
                f"The media server listed more than {MAX_SPANS} recorded spans.", retryable=False
            )
        return spans

    async def _ready(self, running: Download, fetched: Fetched) -> None:
        download_id = running.id
        await self._poster(download_id)
        manifest = self._sign_manifest(
            manifest_claims(running, fetched.spans, fetched.size, fetched.sha256)
        )
        # The lifetime counts from the moment the file is there.
        expires = self._clock() + timedelta(seconds=self._settings.archive_ttl)
        self._finishing.add(download_id)
        ready = await self._db.update_download(
            download_id,
            self._clock(),
            expect={Status.RUNNING},
            held_by=self.owner,
            status=Status.READY,
            progress=100,
            size=fetched.size,
            duration=fetched.duration,
            sha256=fetched.sha256,
            manifest=manifest,
            message=None,
            expires_at=expires,
        )
        if ready is not None and ready.status == Status.READY:
            self.metrics.job_finished("ready", self._elapsed(download_id), fetched.size)
            audit_download("archive.ready", ready, seconds=round(fetched.duration, 1),
                          bytes=fetched.size)  # fmt: skip
            self.announce(ready)

    async def _poster(self, download_id: int) -> None:
        """Decode one keyframe for the page's player, off the loop; an archive needs none."""
        path, poster = (
            self._files.local_path(download_id),
            self._files.local_poster_path(download_id),
        )
        try:
            await run_blocking(None, make_poster, path, poster)
            await self._files.store_poster(download_id)
        except Exception as exc:  # a file without a poster is still a whole archive
            log.warning("archive %d: no poster frame (%s)", download_id, type(exc).__name__)
        finally:
            await self._files.drop_copy(download_id)

    async def _fail(self, download_id: int, message: str) -> None:
        self._finishing.add(download_id)
        failed = await self._db.update_download(
            download_id,
            self._clock(),
            expect=PENDING,
            held_by=self.owner,
            status=Status.FAILED,
            message=message,
            progress=0,
        )
        if failed is not None and failed.status == Status.FAILED:
            self.metrics.job_finished("failed", self._elapsed(download_id))
            audit_download("archive.failed", failed, reason=message)
            self.announce(failed)

    def _progress(self, download: Download, percent: int) -> None:
        self._publisher.publish(
            events.token_channel(download.session_id),
            events.EVENT,
            events.archive_progress(self._resources.download(download), percent),
        )
