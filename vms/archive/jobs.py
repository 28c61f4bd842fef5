"""Server-side archives: a durable queue in SQLite worked by a bounded pool of fetchers."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BufferedWriter
from typing import Any, Protocol

import aiohttp

from vms.archive.files import ArchiveFiles, fsync_and_publish
from vms.archive.mediaclient import get_url
from vms.archive.mp4check import IncompleteMP4, check_mp4
from vms.auth import Authenticator, Principal
from vms.config import Config
from vms.dates import utcnow
from vms.db import Database
from vms.models import Camera, Download, Kind, Status
from vms.resources import download_resource

log = logging.getLogger(__name__)

EVENT = "App\\Events\\TokenPush"
# Bytes gathered before one write: few executor round trips, and one batch is written
# while the next is received.
_WRITE_BATCH = 4 << 20
_PROGRESS_EVERY = 1.0


class TooManyPending(Exception):
    """The device already has as many archives queued or running as it may."""


class FetchError(Exception):
    """Fetching from the media server failed; `message` is for the user."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Publisher(Protocol):
    """Where archive events go: the push hub."""

    def publish(self, channel: str, event: str, data: Mapping[str, Any]) -> int:
        """Send to every socket on `channel`."""
        ...

    def send_to_socket(
        self, socket_id: str, channel: str, event: str, data: Mapping[str, Any]
    ) -> bool:
        """Send to one socket."""
        ...


def token_channel(session_id: str) -> str:
    """The private channel of one device session."""
    return f"private-token.{session_id}"


@dataclass
class _Progress:
    total: int | None
    received: int = 0
    percent: int = 0
    last_push: float = 0.0


class ArchiveService:
    """Queues, fetches and announces archives; survives restarts through the database."""

    def __init__(
        self,
        config: Config,
        db: Database,
        auth: Authenticator,
        http: aiohttp.ClientSession,
        files: ArchiveFiles,
        publisher: Publisher,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._config = config
        self._db = db
        self._auth = auth
        self._http = http
        self.files = files
        self._publisher = publisher
        self._clock = clock
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._request_lock = asyncio.Lock()

    # Lifetime

    async def start(self) -> None:
        """Resume what a previous run left: partial files go, queued and running jobs run again."""
        self.files.root.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(None, self._remove_partials)
        if removed:
            log.info("removed %d partial archive files left by the previous run", removed)
        for download in await self._db.archives_in([Status.RUNNING, Status.QUEUED]):
            if download.status == Status.RUNNING:
                await self._db.update_download(
                    download.id, self._clock(), status=Status.QUEUED, progress=0
                )
            self._queue.put_nowait(download.id)
        if self._queue.qsize():
            log.info("resuming %d archive jobs", self._queue.qsize())
        self._workers = [
            asyncio.create_task(self._work(), name=f"archive-worker-{n}")
            for n in range(self._config.download_concurrency)
        ]

    def _remove_partials(self) -> int:
        count = 0
        for path in self.files.root.glob("*.part"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    async def stop(self) -> None:
        """Stop the workers; interrupted jobs stay queued or running and resume next start."""
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    # Requests

    async def request(
        self, principal: Principal, camera: Camera, start: datetime, end: datetime
    ) -> Download:
        """Queue an archive for this device, or hand back the same one already underway."""
        session = principal.session
        async with self._request_lock:
            # Keyed on the device session, which belongs to one user: another user who sends
            # the same device id never gets this user's archive.
            existing = await self._db.pending_archive(session.id, camera.id, start, end)
            if existing is not None and (
                existing.status != Status.READY or self.files.exists(existing.id)
            ):
                if existing.status == Status.READY:
                    self._push(session.id, self.generated_event(existing))
                return existing
            pending = await self._db.count_pending(principal.user.id, session.device)
            if pending >= self._config.max_pending_per_device:
                raise TooManyPending
            download = await self._db.create_download(
                kind=Kind.ARCHIVE,
                session=session,
                camera=camera,
                range_from=start,
                range_to=end,
                status=Status.QUEUED,
                now=self._clock(),
            )
        self._queue.put_nowait(download.id)
        return download

    def signed_url(self, download: Download) -> str | None:
        """The download URL of a ready archive; None otherwise."""
        if download.status != Status.READY or download.expires_at is None:
            return None
        return self.files.signed_url(download.id, download.expires_at)

    def file_exists(self, download: Download) -> bool:
        """True while a ready archive's file is on disk."""
        return download.status == Status.READY and self.files.exists(download.id)

    # Events

    def resource(self, download: Download) -> dict[str, Any]:
        """DOWNLOAD for an archive."""
        return download_resource(
            download,
            self._config.tz,
            url=self.signed_url(download),
            is_file_exists=self.file_exists(download),
        )

    def generated_event(self, download: Download) -> dict[str, Any]:
        """`archive_generated`: ok with the URL, or error with the reason."""
        failed = download.status != Status.READY
        return {
            "type": "archive_generated",
            "status": "error" if failed else "ok",
            "data": {"download": self.resource(download)},
            "subject": None,
            "message": (download.message or "The archive could not be made.") if failed else None,
        }

    def progress_event(self, download: Download, percent: int) -> dict[str, Any]:
        """`archive_progress` with 0..100."""
        return {
            "type": "archive_progress",
            "status": "ok",
            "data": {"download": self.resource(download), "progress": percent},
            "subject": None,
            "message": None,
        }

    def _push(self, session_id: str, payload: Mapping[str, Any]) -> None:
        self._publisher.publish(token_channel(session_id), EVENT, payload)

    async def replay(self, socket_id: str, channel: str) -> None:
        """A device subscribed: send it the `archive_generated` of archives still on disk."""
        prefix = token_channel("")
        if not channel.startswith(prefix):
            return
        for download in await self._db.ready_archives_for_session(channel[len(prefix) :]):
            if self.files.exists(download.id):
                self._publisher.send_to_socket(
                    socket_id, channel, EVENT, self.generated_event(download)
                )

    # Work

    async def _work(self) -> None:
        while True:
            download_id = await self._queue.get()
            try:
                await self._run(download_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one broken job must not take the worker down
                log.error("archive %d: unexpected %s", download_id, type(exc).__name__)
                await self._finish_failed(download_id, "The archive could not be made.")
            finally:
                self._queue.task_done()

    async def _run(self, download_id: int) -> None:
        download = await self._db.download(download_id)
        if download is None or download.status not in Status.PENDING:
            return
        camera = await self._db.camera(download.camera_id)
        if camera is None:
            await self._finish_failed(download_id, "The camera no longer exists.")
            return
        attempts = self._config.fetch_attempts
        for attempt in range(download.attempts + 1, download.attempts + attempts + 1):
            await self._db.update_download(
                download_id, self._clock(), status=Status.RUNNING, attempts=attempt, progress=0
            )
            running = await self._db.download(download_id)
            if running is not None:
                self._push(running.session_id, self.progress_event(running, 0))
            try:
                size = await self._fetch(download, camera)
            except FetchError as exc:
                log.warning("archive %d attempt %d: %s", download_id, attempt, exc.message)
                if not exc.retryable or attempt >= download.attempts + attempts:
                    await self._finish_failed(download_id, exc.message)
                    return
                await asyncio.sleep(self._config.fetch_backoff * 2 ** (attempt - 1))
                continue
            expires = self._clock() + timedelta(seconds=self._config.archive_ttl)
            await self._db.update_download(
                download_id,
                self._clock(),
                status=Status.READY,
                progress=100,
                size=size,
                message=None,
                expires_at=expires,
            )
            ready = await self._db.download(download_id)
            assert ready is not None
            log.info("archive %d ready: %d bytes", download_id, size)
            self._push(ready.session_id, self.generated_event(ready))
            return

    async def _finish_failed(self, download_id: int, message: str) -> None:
        await self._db.update_download(
            download_id, self._clock(), status=Status.FAILED, message=message, progress=0
        )
        failed = await self._db.download(download_id)
        if failed is not None:
            self._push(failed.session_id, self.generated_event(failed))

    async def _fetch(self, download: Download, camera: Camera) -> int:
        """Stream the media server's MP4 into a partial file, check it, publish it; its size."""
        loop = asyncio.get_running_loop()
        partial = self.files.partial_path(download.id)
        token = self._auth.media_token(
            camera.path, download.range_from, download.range_to, self._clock()
        )
        url = get_url(camera, download.range_from, download.range_to, None, "mp4")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10, sock_read=self._config.fetch_read_timeout
        )
        handle: BufferedWriter | None = None
        try:
            async with self._http.get(
                url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
            ) as response:
                _check_status(response.status)
                # The first progress after 0% waits a second: a short job goes straight to done.
                progress = _Progress(total=response.content_length, last_push=time.monotonic())
                handle = await loop.run_in_executor(None, open, partial, "wb")
                await self._receive(download, response, handle, progress)
                await loop.run_in_executor(None, handle.close)
            if progress.total is not None and progress.received != progress.total:
                raise FetchError("The media server sent an incomplete video.", retryable=True)
            await loop.run_in_executor(None, check_mp4, partial)
            await loop.run_in_executor(
                None, fsync_and_publish, partial, self.files.path(download.id)
            )
            return progress.received
        except IncompleteMP4:
            raise FetchError("The media server sent an incomplete video.", retryable=True) from None
        except aiohttp.ClientPayloadError:
            raise FetchError("The media server connection broke off.", retryable=True) from None
        except TimeoutError:
            raise FetchError("The media server stopped sending.", retryable=True) from None
        except aiohttp.ClientError:
            raise FetchError("The media server could not be reached.", retryable=True) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise FetchError("The server ran out of disk space.", retryable=False) from None
            raise FetchError("The server could not write the archive.", retryable=False) from None
        finally:
            if handle is not None and not handle.closed:
                handle.close()
            if partial.exists():
                partial.unlink(missing_ok=True)

    async def _receive(
        self,
        download: Download,
        response: aiohttp.ClientResponse,
        handle: BufferedWriter,
        progress: _Progress,
    ) -> None:
        """Copy the body to `handle`: reading the next batch while the last one is written."""
        loop = asyncio.get_running_loop()
        window_start, window_bytes = time.monotonic(), 0
        batch: list[bytes] = []
        batch_size = 0
        writing: asyncio.Future[None] | None = None
        try:
            async for chunk in response.content.iter_any():
                batch.append(chunk)
                batch_size += len(chunk)
                if batch_size >= _WRITE_BATCH:
                    if writing is not None:
                        await writing
                    writing = loop.run_in_executor(None, handle.writelines, batch)
                    batch, batch_size = [], 0
                progress.received += len(chunk)
                window_bytes += len(chunk)
                now = time.monotonic()
                # A slow trickle never trips the read timeout; a rate floor over a window does.
                if now - window_start >= self._config.fetch_rate_window:
                    if window_bytes < self._config.fetch_min_rate * (now - window_start):
                        raise TimeoutError
                    window_start, window_bytes = now, 0
                if progress.total and now - progress.last_push >= _PROGRESS_EVERY:
                    await self._report_progress(download, progress, now)
            if writing is not None:
                await writing
                writing = None
            if batch:
                await loop.run_in_executor(None, handle.writelines, batch)
        finally:
            # Never close the file under a write still running in the executor.
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)

    async def _report_progress(self, download: Download, progress: _Progress, now: float) -> None:
        assert progress.total
        percent = min(99, progress.received * 100 // progress.total)
        if percent <= progress.percent:
            return
        progress.percent, progress.last_push = percent, now
        await self._db.update_download(download.id, self._clock(), progress=percent)
        current = await self._db.download(download.id)
        if current is not None:
            self._push(current.session_id, self.progress_event(current, percent))


def _check_status(status: int) -> None:
    if status == 200:
        return
    if status >= 500:
        raise FetchError(
            f"The media server answered with an error (HTTP {status}).", retryable=True
        )
    if status == 404:
        raise FetchError("No recording found between from and to.", retryable=False)
    if status in (401, 403):
        raise FetchError("The media server refused access to the recording.", retryable=False)
    raise FetchError(f"The media server refused the request (HTTP {status}).", retryable=False)
