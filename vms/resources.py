"""JSON shapes of the API's records (Laravel API resources)."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from vms.archive.links import download_name
from vms.dates import format_local, format_stamp
from vms.models import Download, User


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


def download_resource(
    download: Download, tz: tzinfo, *, url: str | None, is_file_exists: bool
) -> dict[str, Any]:
    """DOWNLOAD as the contract spells it, for history records and server-side archives."""
    return {
        "id": download.id,
        "name": download_name(download.camera_name, download.range_from, download.range_to, tz),
        "type": "mp4",
        "url": url,
        "from": format_local(download.range_from, tz),
        "to": format_local(download.range_to, tz),
        "created_at": format_stamp(download.created_at),
        "updated_at": format_stamp(download.updated_at),
        "is_file_exists": is_file_exists,
        "user_id": download.user_id,
        "camera_id": download.camera_id,
        "status": download.status,
    }
