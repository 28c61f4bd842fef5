"""Creating accounts: the password is hashed off the event loop, then the user is stored."""

from __future__ import annotations

import asyncio
from datetime import datetime

from vms.models import User
from vms.passwords import hash_password
from vms.store import Store

# Shorter passwords are refused wherever one is set.
MIN_PASSWORD_LENGTH = 12


def password_problem(password: str) -> str | None:
    """Why `password` may not be set, or None if it may."""
    if not password:
        return "the password is empty"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must be at least {MIN_PASSWORD_LENGTH} characters"
    return None


async def create_user(
    db: Store,
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


async def set_password(db: Store, user: User, password: str, now: datetime) -> None:
    """Hash the new password off the event loop and store it."""
    loop = asyncio.get_running_loop()
    hashed = await loop.run_in_executor(None, hash_password, password)
    await db.set_password_hash(user.id, hashed, now)
