"""First-start set-up: an operator account and the demo cameras."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from vms.config import Config
from vms.store import Store
from vms.users import create_user

log = logging.getLogger(__name__)

OPERATOR_LOGIN = "admin"
DEMO_CAMERAS = ((1, "Gate", "camera1"), (2, "Lobby", "camera2"))


async def ensure_operator(db: Store, now: datetime) -> str | None:
    """Create the operator account if there are no users; returns its one-time password."""
    if await db.count_users():
        return None
    password = secrets.token_urlsafe(12)
    await create_user(db, OPERATOR_LOGIN, password, name="Operator", is_admin=True, now=now)
    return password


async def forget_operator(db: Store) -> None:
    """Remove the first-start operator account again (its password was never shown)."""
    found = await db.user_with_hash(OPERATOR_LOGIN)
    if found is not None:
        await db.delete_user(found[0].id)


async def ensure_demo_cameras(db: Store, config: Config, now: datetime) -> bool:
    """Register demo cameras 1 and 2 on the embedded media server if there are no cameras."""
    if config.media_port == 0 or not config.demo_cameras or await db.cameras():
        return False
    for camera_id, name, path in DEMO_CAMERAS:
        await db.put_camera(camera_id, name, path, config.media_url, now)
    return True


async def follow_media_port(db: Store, config: Config, now: datetime) -> list[int]:
    """Move demo cameras left on an earlier embedded media port (or scheme) to the current one.

    A demo camera is one with a demo id and path whose media server is on the embedded
    server's host; the ids of those moved.
    """
    current = urlsplit(config.media_url)
    moved = []
    for camera_id, _name, path in DEMO_CAMERAS:
        camera = await db.camera(camera_id)
        if camera is None or camera.path != path or camera.media_server.url == config.media_url:
            continue
        if urlsplit(camera.media_server.url).hostname != current.hostname:
            continue
        await db.put_camera(camera_id, camera.name, path, config.media_url, now)
        moved.append(camera_id)
    if moved:
        log.info("demo cameras %s follow the embedded media server to %s", moved, config.media_url)
    return moved
