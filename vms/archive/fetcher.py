"""Streaming one archive from a media server's /get into a file: no database, no push.

The body is read as it arrives and written in batches on an executor thread while the next
batch is received, and hashed (SHA-256) in the same pass on a second executor thread; a slow
trickle is cut by a rate floor, a silence by the read timeout. The file is written under a
partial name, checked to be a whole MP4, made durable and renamed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from io import BufferedWriter
from pathlib import Path
from typing import Protocol

import aiohttp

from vms.archive.files import fsync_and_publish
from vms.archive.mp4check import IncompleteMP4, check_mp4
from vms.threads import run_blocking

# Bytes gathered before one write: few executor round trips, and one batch is written
# while the next is received.
WRITE_BATCH = 4 << 20
PROGRESS_EVERY = 1.0


# Called with the bytes received so far and the expected total (None if unknown).
ProgressCallback = Callable[[int, int | None], Awaitable[None]]


@dataclass(frozen=True)
class Fetched:
    """What was written: bytes, seconds of footage and the hex SHA-256 of the file."""

    size: int
    duration: float
    sha256: str


class FetchError(Exception):
    """Fetching from the media server failed; `message` is for the user."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class FetchLimits:
    """When a transfer counts as stalled."""

    read_timeout: float = 30.0
    # A body slower than min_rate bytes/s over a whole window counts as stalled.
    min_rate: int = 8 * 1024
    rate_window: float = 30.0
    # The disk under the archive must keep this many bytes free (VMS_MIN_FREE_DISK).
    min_free_disk: int = 0


LOW_DISK_MESSAGE = "Not enough disk space for new archives."


class _LowDisk(Exception):
    """Writing the next batch would take the disk below the configured free space."""


async def fetch_archive(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    partial: Path,
    final: Path,
    limits: FetchLimits,
    on_progress: ProgressCallback,
) -> Fetched:
    """Fetch `url` into `final` (through `partial`). FetchError says what failed."""
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=limits.read_timeout)
    handle: BufferedWriter | None = None
    try:
        async with http.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        ) as response:
            check_status(response.status)
            total = response.content_length
            handle = await loop.run_in_executor(None, open, partial, "wb")
            digest = hashlib.sha256()
            received = await _receive(response, handle, digest, total, limits, on_progress)
            await loop.run_in_executor(None, handle.close)
        if total is not None and received != total:
            raise FetchError("The media server sent an incomplete video.", retryable=True)
        duration = await run_blocking(None, check_mp4, partial)
        await run_blocking(None, fsync_and_publish, partial, final)
        return Fetched(received, duration, digest.hexdigest())
    except _LowDisk:
        raise FetchError(LOW_DISK_MESSAGE, retryable=False) from None
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
        _discard(handle, partial)


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def free_bytes(path: Path | int) -> int:
    """Bytes free for unprivileged writers on the file system holding `path` (or an fd)."""
    stats = os.statvfs(path) if isinstance(path, Path) else os.fstatvfs(path)
    return stats.f_bavail * stats.f_frsize


def _hash(digest: _Digest, batch: list[bytes]) -> None:
    for chunk in batch:
        digest.update(chunk)


def _write(handle: BufferedWriter, batch: list[bytes], min_free: int) -> None:
    """Write a batch, unless it would take the disk below `min_free` bytes free."""
    if min_free and free_bytes(handle.fileno()) - sum(map(len, batch)) < min_free:
        raise _LowDisk
    handle.writelines(batch)


async def _hash_and_write(
    handle: BufferedWriter, digest: _Digest, batch: list[bytes], min_free: int
) -> None:
    """Hash a batch on one executor thread while another writes it (both release the GIL).

    Returns only when both are done, so the file is never closed under a write.
    """
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(
        loop.run_in_executor(None, _hash, digest, batch),
        loop.run_in_executor(None, _write, handle, batch, min_free),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _receive(
    response: aiohttp.ClientResponse,
    handle: BufferedWriter,
    digest: _Digest,
    total: int | None,
    limits: FetchLimits,
    on_progress: ProgressCallback,
) -> int:
    """Copy the body to `handle`, reading the next batch while the last one is written."""
    received = 0
    window_start = last_report = time.monotonic()  # the first report waits a second
    window_bytes = batch_size = 0
    batch: list[bytes] = []
    writing: asyncio.Task[None] | None = None
    try:
        async for chunk in response.content.iter_any():
            batch.append(chunk)
            batch_size += len(chunk)
            if batch_size >= WRITE_BATCH:
                if writing is not None:
                    await asyncio.shield(writing)
                writing = asyncio.create_task(
                    _hash_and_write(handle, digest, batch, limits.min_free_disk)
                )
                batch, batch_size = [], 0
            received += len(chunk)
            window_bytes += len(chunk)
            now = time.monotonic()
            # A slow trickle never trips the read timeout; a rate floor over a window does.
            if now - window_start >= limits.rate_window:
                if window_bytes < limits.min_rate * (now - window_start):
                    raise TimeoutError
                window_start, window_bytes = now, 0
            if now - last_report >= PROGRESS_EVERY:
                last_report = now
                await on_progress(received, total)
        if writing is not None:
            await asyncio.shield(writing)
        if batch:
            writing = asyncio.create_task(
                _hash_and_write(handle, digest, batch, limits.min_free_disk)
            )
            await asyncio.shield(writing)
        writing = None
    finally:
        # Never close the file under a write still running in the executor (hence the
        # shields: a cancelled await must not cancel the task that waits for the threads).
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
    return received


def _discard(handle: BufferedWriter | None, partial: Path) -> None:
    """Close and remove what a transfer left (a quick unlink, even on the error path)."""
    if handle is not None and not handle.closed:
        handle.close()
    partial.unlink(missing_ok=True)


def check_status(status: int) -> None:
    """FetchError for anything but 200, retryable for the media server's own failures."""
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
