"""Blocking work on executor threads that a cancelled caller still waits for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(
    executor: Executor | None, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run `func` on `executor` (None: the loop's default); if cancelled, wait for it first.

    A thread cannot be interrupted: without the wait, a file could be written or renamed after
    the task that started it has ended and whoever cancelled it has cleaned up.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, lambda: func(*args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller should see
        raise
