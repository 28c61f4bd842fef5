"""Streaming one archive from a media server's /get into a file: no database, no push.

An archive is one /get per recorded span of its range (MediaMTX's /get stops at a gap); several
are joined into one file as they arrive (`joiner`). The bytes are written in batches on an
executor thread while the next batch is received, and hashed (SHA-256) in the same pass on a
second executor thread; a slow
trickle is cut by a rate floor, a silence by the read timeout. The file is written under a
partial name, checked to be a whole MP4, made durable and renamed.

With a bucket, each batch also goes to a multipart upload as it is written; the local file
is then only the copy the checks and the poster read, and the object becomes visible
(CompleteMultipartUpload) only once the checks pass. Any failure or cancel aborts the upload.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BufferedWriter
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp

from vms.archive.files import fsync_and_publish
from vms.archive.joiner import FragmentJoiner, JoinError, joinable
from vms.archive.mediaclient import Span
from vms.archive.mp4check import IncompleteMP4, check_mp4
from vms.archive.storage import StorageError
from vms.mediaserver.mp4read import Header
from vms.threads import run_blocking

if TYPE_CHECKING:
    from vms.archive.objects import Upload

log = logging.getLogger(__name__)

# Bytes gathered before one write: few executor round trips, and one batch is written
# while the next is received.
WRITE_BATCH = 4 << 20
PROGRESS_EVERY = 1.0


# Called with the share of the archive fetched so far, 0.0 to 1.0 (None if unknown).
ProgressCallback = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Piece:
    """One recorded span to fetch: its /get address and the moment it starts."""

    url: str
    start: datetime
    seconds: float


@dataclass(frozen=True)
class Fetched:
    """What was written: bytes, seconds of footage, the hex SHA-256 and the spans in the file."""

    size: int
    duration: float
    sha256: str
    spans: tuple[Span, ...]


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
STORAGE_MESSAGE = "The archive storage could not be reached."
NOT_FOUND_MESSAGE = "No recording found between from and to."


class _LowDisk(Exception):
    """Writing the next batch would take the disk below the configured free space."""


async def fetch_archive(
    http: aiohttp.ClientSession,
    pieces: Sequence[Piece],
    token: str,
    partial: Path,
    final: Path,
    limits: FetchLimits,
    on_progress: ProgressCallback,
    upload: Upload | None = None,
) -> Fetched:
    """Fetch the recorded `pieces` of a range into one file `final` (through `partial`).

    One piece is copied as the media server sends it; several are joined into one
    fragmented MP4 (gaps skipped) while they stream in. With `upload`, the same bytes go to
    the bucket and `final` is a local copy for the poster. FetchError says what failed.
    """
    output: _Output | None = None
    opened: list[BufferedWriter] = []  # filled on the thread, so a cancel cannot lose it

    def open_partial() -> BufferedWriter:
        opened.append(open(partial, "wb"))  # noqa: SIM115 - closed by _discard or finish
        return opened[0]

    try:
        output = _Output(await run_blocking(None, open_partial), limits.min_free_disk, upload)
        if upload is not None:
            await upload.start()
        if len(pieces) == 1:
            spans = await _fetch_one(http, pieces[0], token, output, limits, on_progress)
        else:
            spans = await _fetch_joined(http, pieces, token, output, limits, on_progress)
        await output.finish()
        duration = await run_blocking(None, check_mp4, partial)
        if len(pieces) == 1:  # measured from the file: what the media server really sent
            spans = [Span(spans[0].start, duration)]
        if upload is None:
            await run_blocking(None, fsync_and_publish, partial, final)
        else:  # the bucket keeps the archive: the local copy need not be durable
            await upload.complete()
            await run_blocking(None, os.replace, partial, final)
        return Fetched(output.size, duration, output.digest.hexdigest(), tuple(spans))
    except _LowDisk:
        raise FetchError(LOW_DISK_MESSAGE, retryable=False) from None
    except StorageError as exc:
        log.warning("archive upload failed: %s", exc)
        raise FetchError(STORAGE_MESSAGE, retryable=True) from None
    except IncompleteMP4:
        raise FetchError("The media server sent an incomplete video.", retryable=True) from None
    except JoinError as exc:
        raise FetchError(str(exc) + ".", retryable=exc.retryable) from None
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
        if output is not None:
            await output.drain()
        _discard(opened[0] if opened else None, partial)
        if upload is not None and not upload.completed:
            await upload.abort()


async def _fetch_one(
    http: aiohttp.ClientSession,
    piece: Piece,
    token: str,
    output: _Output,
    limits: FetchLimits,
    on_progress: ProgressCallback,
) -> list[Span]:
    """Copy one /get answer as it is; progress by its Content-Length."""
    async with _get(http, piece.url, token, limits) as response:
        check_status(response.status)
        total = response.content_length

        async def progress(received: int) -> None:
            await on_progress(received / total if total else 0.0)

        received = await _receive(response, None, output, limits, progress)
    if total is not None and received != total:
        raise FetchError("The media server sent an incomplete video.", retryable=True)
    return [Span(piece.start, piece.seconds)]


async def _fetch_joined(
    http: aiohttp.ClientSession,
    pieces: Sequence[Piece],
    token: str,
    output: _Output,
    limits: FetchLimits,
    on_progress: ProgressCallback,
) -> list[Span]:
    """One /get per piece, joined into one file; progress by the seconds written."""
    pieces, in_band = await _joinable(http, pieces, token, limits)
    expected = sum(piece.seconds for piece in pieces) or 1.0
    joiner = FragmentJoiner(expected, in_band=in_band)
    spans: list[Span] = []

    async def progress(_received: int) -> None:
        await on_progress(min(1.0, joiner.written_seconds / expected))

    for piece in pieces:
        async with _get(http, piece.url, token, limits) as response:
            if response.status == 404:  # gone since /list (retention): the gap grows
                continue
            check_status(response.status)
            joiner.start_piece()
            await _receive(response, joiner.feed, output, limits, progress)
        seconds = joiner.end_piece()
        if seconds > 0:
            spans.append(Span(piece.start, seconds))
    if not spans:
        raise FetchError(NOT_FOUND_MESSAGE, retryable=False)
    return spans


async def _joinable(
    http: aiohttp.ClientSession, pieces: Sequence[Piece], token: str, limits: FetchLimits
) -> tuple[list[Piece], bool]:
    """The pieces that can share the first one's tracks, and whether their H.264 settings
    differ (then the joiner carries each piece's parameter sets in-band).

    Read from their headers alone, before the first byte is written, so the file's stated
    length counts only what it holds: a span with other tracks or another codec is left out.
    """
    headers = [await _header(http, piece, token, limits) for piece in pieces]
    first = next((header for header in headers if header is not None), None)
    if first is None:
        raise FetchError(NOT_FOUND_MESSAGE, retryable=False)
    kept = [
        (piece, header)
        for piece, header in zip(pieces, headers, strict=True)
        if header is not None and joinable(first, header, in_band=True)
    ]
    if len(kept) < len(pieces):
        log.warning("%d recorded spans have another stream: left out", len(pieces) - len(kept))
    in_band = any(header.compat_key != first.compat_key for _, header in kept)
    return [piece for piece, _ in kept], in_band


async def _header(
    http: aiohttp.ClientSession, piece: Piece, token: str, limits: FetchLimits
) -> Header | None:
    """The piece's ftyp+moov, read from the start of its /get; None if it is gone."""
    joiner = FragmentJoiner(piece.seconds)
    async with _get(http, piece.url, token, limits) as response:
        if response.status == 404:
            return None
        check_status(response.status)
        async for chunk in response.content.iter_any():
            joiner.feed(chunk)
            if joiner.header is not None:
                return joiner.header
    raise JoinError("The media server sent a video without a movie header", retryable=True)


def _get(
    http: aiohttp.ClientSession, url: str, token: str, limits: FetchLimits
) -> aiohttp.client._RequestContextManager:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=limits.read_timeout)
    return http.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


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
    handle: BufferedWriter,
    digest: _Digest,
    batch: list[bytes],
    min_free: int,
    upload: Upload | None = None,
) -> None:
    """Hash a batch on one executor thread while another writes it (both release the GIL),
    and hand it to the upload, if any.

    Returns only when all are done, so the file is never closed under a write.
    """
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(
        loop.run_in_executor(None, _hash, digest, batch),
        loop.run_in_executor(None, _write, handle, batch, min_free),
        *([] if upload is None else [upload.add(batch)]),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


class _Output:
    """The file being written: bytes gathered in batches, each hashed and written off the loop
    while the next one is received."""

    def __init__(self, handle: BufferedWriter, min_free: int, upload: Upload | None) -> None:
        self.handle = handle
        self.upload = upload
        self.digest = hashlib.sha256()
        self.size = 0
        self._min_free = min_free
        self._batch: list[bytes] = []
        self._batch_size = 0
        self._writing: asyncio.Task[None] | None = None

    def add(self, chunk: bytes) -> bool:
        """Append `chunk`; True when the batch is full and should be flushed."""
        self._batch.append(chunk)
        self._batch_size += len(chunk)
        self.size += len(chunk)
        return self._batch_size >= WRITE_BATCH

    async def flush(self) -> None:
        """Hand the batch to the threads once the previous one is done."""
        if self._writing is not None:
            await asyncio.shield(self._writing)
        self._writing = None
        if self._batch:
            batch, self._batch, self._batch_size = self._batch, [], 0
            self._writing = asyncio.create_task(
                _hash_and_write(self.handle, self.digest, batch, self._min_free, self.upload)
            )

    async def finish(self) -> None:
        """Write what is left and close the file."""
        await self.flush()
        if self._writing is not None:
            await asyncio.shield(self._writing)
        self._writing = None
        await asyncio.get_running_loop().run_in_executor(None, self.handle.close)

    async def drain(self) -> None:
        """Wait for a write still running in the executor (also when the fetch is cancelled).

        Never close the file under a write still running (hence the shields: a cancelled
        await must not cancel the task that waits for the threads).
        """
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        self._writing = None


async def _receive(
    response: aiohttp.ClientResponse,
    transform: Callable[[bytes], list[bytes]] | None,
    output: _Output,
    limits: FetchLimits,
    on_progress: Callable[[int], Awaitable[None]],
) -> int:
    """Copy the body (through `transform`, if any) to `output` as it arrives, cut by a rate
    floor; the bytes received."""
    received = 0
    window_start = last_report = time.monotonic()  # the first report waits a second
    window_bytes = 0
    async for chunk in response.content.iter_any():
        for part in (chunk,) if transform is None else transform(chunk):
            if output.add(part):
                await output.flush()
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
            await on_progress(received)
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
        raise FetchError(NOT_FOUND_MESSAGE, retryable=False)
    if status in (401, 403):
        raise FetchError("The media server refused access to the recording.", retryable=False)
    raise FetchError(f"The media server refused the request (HTTP {status}).", retryable=False)
