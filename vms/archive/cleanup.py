"""Deleting archives past their lifetime, and files no download owns."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vms import roles
from vms.archive.files import PART_SUFFIX, POSTER_SUFFIX, ArchiveFiles, file_name
from vms.archive.storage import StorageError
from vms.dates import utcnow
from vms.models import PENDING, Status
from vms.roles import play_role
from vms.store import Store

if TYPE_CHECKING:
    from vms.archive.objects import Bucket

log = logging.getLogger(__name__)

_BATCH = 5000


def _delete(root: Path, names: Iterable[str]) -> int:
    """Delete these files of `root`, absent ones being no error; how many archives went.

    A poster removed is not counted: it belongs to an archive.
    """
    removed = 0
    for name in names:
        try:
            (root / name).unlink()
        except FileNotFoundError:
            continue
        removed += not name.endswith(POSTER_SUFFIX)
    return removed


def _owner(name: str) -> tuple[int, str] | None:
    """The download id a file in DATA/archives belongs to, and what it is: file, partial, poster."""
    if name.endswith(POSTER_SUFFIX):
        stem = name[: -len(POSTER_SUFFIX)]
        return (int(stem), "poster") if stem.isdigit() else None
    partial = name.endswith(PART_SUFFIX)
    stem = name[: -len(PART_SUFFIX)] if partial else name
    if partial and stem.endswith(POSTER_SUFFIX):  # a poster being written when it crashed
        stem = stem[: -len(POSTER_SUFFIX)]
        return (int(stem), "partial") if stem.isdigit() else None
    if not stem.endswith(".mp4") or not stem[:-4].isdigit():
        return None
    return int(stem[:-4]), "partial" if partial else "file"


def _finished(listed: Iterable[str]) -> dict[int, list[str]]:
    """The final files and posters of a listing, by the download they belong to.

    A sweep then costs the files there are, not the archives due: after a restart most due
    archives may have none, and none of them is looked for.
    """
    found: dict[int, list[str]] = {}
    for name in listed:
        owner = _owner(name)
        if owner is not None and owner[1] != "partial":
            found.setdefault(owner[0], []).append(name)
    return found


def _leftovers(
    listed: Iterable[str], statuses: Mapping[int, Status], busy: Container[int]
) -> tuple[list[str], set[int]]:
    """The names nobody owns any more, and the downloads whose final file is among `listed`.

    Partial files go unless their job is still pending; final files and posters go once their
    archive is neither pending nor ready. A file being sent is left for the next round.
    """
    orphans: list[str] = []
    present: set[int] = set()
    for name in sorted(listed):
        owner = _owner(name)
        if owner is None:
            continue
        download_id, kind = owner
        status = statuses.get(download_id)
        if kind == "file":
            present.add(download_id)
        if download_id in busy or status in PENDING:
            continue
        if kind == "partial" or status != Status.READY:
            orphans.append(name)
    return orphans, present


def _list_names(root: Path) -> list[str]:
    try:
        with os.scandir(root) as entries:
            return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []


async def _expire_due(
    db: Store,
    due: Sequence[int],
    listed: set[str],
    delete: Callable[[list[str]], Awaitable[int]],
    now: datetime,
) -> int:
    """Expire the `due` archives in batches, each after deleting its files; files removed.

    Only names `listed` are deleted, and they are taken out of it for the orphan pass after.
    Each batch's files go first: a crash between leaves a ready archive without its file,
    which the next round expires as vanished.
    """
    # A listing of 100k names takes tens of ms to read: not on the loop.
    finished = await asyncio.get_running_loop().run_in_executor(None, _finished, listed)
    removed = 0
    for index in range(0, len(due), _BATCH):
        batch = due[index : index + _BATCH]
        names = [name for i in batch for name in finished.pop(i, ())]
        if names:
            listed.difference_update(names)
            removed += await delete(names)
        await db.mark_expired(batch, now)
    return removed


async def purge_expired(db: Store, files: ArchiveFiles, now: datetime) -> int:
    """Delete archives whose time is up and files nobody owns; returns files removed.

    Files being sent right now and jobs being written are left for the next round.
    """
    if files.bucket is not None:
        return await _purge_stored(db, files, files.bucket, now)
    loop = asyncio.get_running_loop()
    busy = files.busy()
    # One listing serves the sweep: due archives lose only the files it shows, and what is
    # left is checked for orphans. It is taken before statuses are read: a job renames its
    # file before it records READY, so a final file whose job still reads as pending is left
    # alone rather than taken for an orphan.
    listed = set(await loop.run_in_executor(None, _list_names, files.root))
    due = [i for i in await db.archives_due(now) if i not in busy]

    async def delete(names: list[str]) -> int:
        return await loop.run_in_executor(None, _delete, files.root, names)

    removed = await _expire_due(db, due, listed, delete, now)

    statuses = await db.archive_statuses()
    orphans, present = await loop.run_in_executor(None, _leftovers, listed, statuses, busy)
    for index in range(0, len(orphans), _BATCH):
        removed += await delete(orphans[index : index + _BATCH])
    # A ready archive whose file vanished (deleted by hand, disk swapped) is expired too.
    vanished = [
        i
        for i, status in statuses.items()
        if status == Status.READY and i not in present and not files.exists(i)
    ]
    if vanished:
        await db.mark_expired(vanished, now)
    if removed or vanished:
        log.info("cleanup removed %d archive files, expired %d", removed, len(due) + len(vanished))
    return removed


async def _purge_stored(db: Store, files: ArchiveFiles, bucket: Bucket, now: datetime) -> int:
    """purge_expired for archives in a bucket: one listing of the prefix per round.

    Also aborts the multipart uploads whose job is over.
    """
    busy = files.busy()
    # Listed before statuses are read, as on disk: an object completed after the listing
    # belongs to a job that still reads as pending, or is checked again below.
    listed = {item.name for item in await bucket.listing()}
    uploads = await bucket.open_uploads()
    due = [i for i in await db.archives_due(now) if i not in busy]

    async def delete(names: list[str]) -> int:
        await bucket.delete(names)
        return sum(1 for name in names if not name.endswith(POSTER_SUFFIX))

    removed = await _expire_due(db, due, listed, delete, now)

    statuses = await db.archive_statuses()
    loop = asyncio.get_running_loop()
    orphans, present = await loop.run_in_executor(None, _leftovers, listed, statuses, busy)
    removed += await delete(orphans)
    # An upload is left open only by a process that died mid-fetch (or lost the storage while
    # aborting). Its job may run again elsewhere with an upload of its own, so it goes once
    # the job is over: by age it could be a slow live fetch (and some servers report no age).
    for upload in uploads:
        owner = _owner(upload.name)
        if owner is None or statuses.get(owner[0]) not in PENDING:
            await bucket.abort(upload.name, upload.upload_id)
    vanished = [
        i
        for i, status in statuses.items()
        if status == Status.READY and i not in present and not await bucket.exists(file_name(i))
    ]
    if vanished:
        await db.mark_expired(vanished, now)
    if removed or vanished:
        log.info("cleanup removed %d archives, expired %d", removed, len(due) + len(vanished))
    return removed


async def cleanup_forever(
    db: Store, files: ArchiveFiles, interval: float, clock: Callable[[], datetime] = utcnow
) -> None:
    """Purge now and then every `interval` seconds until cancelled, while this process holds
    the cleanup role (one process of those sharing a database); until then, ask each interval."""

    async def purge_forever() -> None:
        while True:
            try:
                await purge_expired(db, files, clock())
            except OSError as exc:
                log.error("archive cleanup failed: %s", exc.strerror)
            except StorageError as exc:
                log.error("archive cleanup failed: %s", exc)
            await asyncio.sleep(interval)

    await play_role(db, roles.CLEANUP, purge_forever, retry=interval)
