"""API requests go first: a big page being drawn waits its turn while one is in flight.

The history page takes milliseconds of the event loop to draw and is drawn in slices
(`vms.web.rendering`); a JSON lookup beside it takes about one. Between slices the page asks
`wait_turn`, which returns at once when no API request is running, else when the last one
ends or after `MAX_WAIT`, so a busy API slows the page by at most that much a slice and
never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

# The longest a slice of a page waits for API requests to end (s): longer than a lookup,
# short enough that a page under a steady API load is still drawn in well under a second.
MAX_WAIT = 0.005

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Foreground:
    """Counts API requests in flight; `wait_turn` is where background drawing yields to them."""

    def __init__(self) -> None:
        self._active = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def active(self) -> int:
        """API requests running now."""
        return self._active

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Around one API request."""
        self._active += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._quiet.set()

    async def wait_turn(self, limit: float = MAX_WAIT) -> None:
        """Return when no API request runs, or after `limit` seconds."""
        if self._active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), limit)


FOREGROUND = web.AppKey("foreground", Foreground)


async def yield_to_api(request: web.Request) -> None:
    """For a page's own steps: wait while API requests run (at most MAX_WAIT)."""
    foreground = request.config_dict.get(FOREGROUND)
    if foreground is not None:
        await foreground.wait_turn()


@web.middleware
async def api_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark this request as foreground work while its handler runs."""
    foreground = request.config_dict.get(FOREGROUND)
    if foreground is None:
        return await handler(request)
    with foreground.request():
        return await handler(request)
