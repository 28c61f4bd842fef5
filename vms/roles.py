"""Work that one process at a time does (the cleanup timer, the demo recorder): a role held
in the store, so that of several processes on one database exactly one plays it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vms.logs import log_unexpected
from vms.store import Store

log = logging.getLogger(__name__)

CLEANUP = "cleanup"
DEMO_RECORDER = "demo-recorder"
# How often a process that does not hold a role asks for it again, unless told otherwise.
RETRY = 10.0


async def play_role(
    db: Store, name: str, work: Callable[[], Awaitable[None]], retry: float = RETRY
) -> None:
    """Run `work` once this process holds the role `name` (asking every `retry` seconds until
    it does), and give the role up when `work` ends or is cancelled."""
    waited = False
    while True:
        try:
            if await db.try_singleton(name):
                break
        except Exception as exc:  # the store is away: ask again later
            log_unexpected(log, f"asking for the {name} role", exc)
        waited = True
        await asyncio.sleep(retry)
    if waited:
        log.info("this process took over the %s role", name)
    try:
        await work()
    finally:
        try:
            await db.release_singleton(name)
        except Exception as exc:  # the role goes with the connection anyway
            log_unexpected(log, f"giving up the {name} role", exc)
