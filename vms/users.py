"""Creating accounts: the password is hashed off the event loop, then the user is stored."""

from __future__ import annotations

import asyncio
from datetime import datetime

from vms.models import User
from vms.passwords import hash_password
from vms.store import Database


async def create_user(
    db: Database,
    login: str,
    password: str,
    *,
    name: str | None = None,
    is_admin: bool = False,
    now: datetime,
) -> User:
    """Hash the password off the event loop and store the user."""
    loop = asyncio.get_running_loop()
    hashed = await loop.run_in_executor(None, hash_password, password)
    return await db.create_user(login, name or login, hashed, is_admin=is_admin, now=now)
