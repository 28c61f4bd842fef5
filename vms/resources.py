"""How records look to clients: DOWNLOAD and user JSON, names, effective status and URLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from vms.archive.files import ArchiveFiles
from vms.archive.links import MediaLinks
from vms.dates import format_local, format_stamp
from vms.models import Download, Kind, Status, User, effective_status


def download_name(camera_name: str, start: datetime, end: datetime, tz: tzinfo) -> str:
    """`Gate, 2026-11-23 10-20-00 - 10-25-00.mp4`; the end date is spelled out if it differs."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    tail = "%H-%M-%S" if local_start.date() == local_end.date() else "%Y-%m-%d %H-%M-%S"
    clean = "".join(ch if ch.isprintable() and ch not in '/\\"' else "_" for ch in camera_name)
    return f"{clean}, {local_start:%Y-%m-%d %H-%M-%S} - {local_end.strftime(tail)}.mp4"


def user_resource(user: User, access_token_id: str) -> dict[str, Any]:
    """The `user` object of a login answer."""
    return {
        "id": user.id,
        "login": user.login,
        "name": user.name,
        "created_at": format_stamp(user.created_at),
        "updated_at": format_stamp(user.updated_at),
        "access_token_id": access_token_id,
    }


@dataclass(frozen=True)
class DownloadFacts:
    """What a download is right now, beyond its row: the status shown and a working URL."""

    status: Status
    url: str | None
    file_exists: bool


class Resources:
    """Presents downloads the same way on every surface (API, push, page)."""

    def __init__(self, tz: tzinfo, files: ArchiveFiles, links: MediaLinks) -> None:
        self.tz = tz
        self._files = files
        self._links = links

    def facts(self, download: Download) -> DownloadFacts:
        """The effective status and URL: a signed file URL, or a fresh link for a record."""
        if download.kind == Kind.LINK:
            return DownloadFacts(download.status, self._links.for_record(download), False)
        exists = download.status == Status.READY and self._files.exists(download.id)
        status = effective_status(download, exists)
        url = None
        if status == Status.READY and download.expires_at is not None:
            url = self._files.signed_url(download.id, download.expires_at)
        return DownloadFacts(status, url, exists)

    def has_poster(self, download: Download) -> bool:
        """Whether a poster frame of the archive is on disk (or in the bucket)."""
        return download.kind == Kind.ARCHIVE and self._files.has_poster(download.id)

    def poster_path(self, download: Download) -> Path:
        """Where the archive's poster frame is."""
        return self._files.poster_path(download.id)

    def name(self, download: Download) -> str:
        """The download's human-readable file name."""
        return download_name(download.camera_name, download.range_from, download.range_to, self.tz)

    def download(self, download: Download, facts: DownloadFacts | None = None) -> dict[str, Any]:
        """DOWNLOAD as the contract spells it."""
        facts = facts or self.facts(download)
        # A file was made (its facts are known) even if it has been deleted since.
        made = download.kind == Kind.ARCHIVE and download.duration is not None
        return {
            "id": download.id,
            "name": self.name(download),
            "type": "mp4",
            "url": facts.url,
            "from": format_local(download.range_from, self.tz),
            "to": format_local(download.range_to, self.tz),
            "created_at": format_stamp(download.created_at),
            "updated_at": format_stamp(download.updated_at),
            "is_file_exists": facts.file_exists,
            "user_id": download.user_id,
            "camera_id": download.camera_id,
            "status": str(facts.status),
            "kind": str(download.kind),
            "progress": _progress(download, facts.status),
            "message": download.message if facts.status in _EXPLAINED else None,
            "size": download.size if made else None,
            "duration": download.duration if made else None,
            "expires_at": format_stamp(download.expires_at) if download.expires_at else None,
            "sha256": download.sha256 if made else None,
        }


# The statuses whose `message` says why.
_EXPLAINED = frozenset({Status.FAILED, Status.CANCELLED})


def _progress(download: Download, status: Status) -> int | None:
    """0..100 for archives (100 once made), None for history records."""
    if download.kind == Kind.LINK:
        return None
    if status in (Status.READY, Status.EXPIRED) and download.duration is not None:
        return 100
    return max(0, min(100, download.progress))
