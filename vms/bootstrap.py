"""First-start set-up: an operator account and the demo cameras."""

from __future__ import annotations

import secrets
from datetime import datetime

from vms.config import Config
from vms.store import Database
from vms.users import create_user

OPERATOR_LOGIN = "admin"
DEMO_CAMERAS = ((1, "Gate", "camera1"), (2, "Lobby", "camera2"))


async def ensure_operator(db: Database, now: datetime) -> str | None:
    """Create the operator account if there are no users; returns its one-time password."""
    if await db.count_users():
        return None
    password = secrets.token_urlsafe(12)
    await create_user(db, OPERATOR_LOGIN, password, name="Operator", is_admin=True, now=now)
    return password


async def ensure_demo_cameras(db: Database, config: Config, now: datetime) -> bool:
    """Register demo cameras 1 and 2 on the embedded media server if there are no cameras."""
    if config.media_port == 0 or not config.demo_cameras or await db.cameras():
        return False
    for camera_id, name, path in DEMO_CAMERAS:
        await db.put_camera(camera_id, name, path, config.media_url, now)
    return True
