"""Big pages rendered in slices, so the event loop answers other requests while they draw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from vms.foreground import FOREGROUND

# The longest the loop is kept by one slice of a page (s). A lookup that arrives while pages
# are drawn waits, at each of the few loop turns it needs, for one slice of every page being
# drawn: at 0.2 ms, two pages made a 1 ms lookup take 3; at 50 us they cost it about one.
# A turn costs a few microseconds, lost in the noise of a page's milliseconds.
SLICE = 0.00005


class Turns:
    """Gives the loop a turn once SLICE has passed since the last, for work done in pieces.

    While an API request runs, the next piece waits for it a little (`vms.foreground`).
    """

    def __init__(self, request: web.Request) -> None:
        self._foreground = request.config_dict.get(FOREGROUND)
        self._deadline = time.perf_counter() + SLICE

    def due(self) -> bool:
        """Whether this work's slice is used up (cheap enough to ask after every piece)."""
        return time.perf_counter() >= self._deadline

    async def take(self) -> None:
        """The loop's turn: what became ready runs, then this work has a new slice."""
        await asyncio.sleep(0)
        if self._foreground is not None:
            await self._foreground.wait_turn()
        self._deadline = time.perf_counter() + SLICE


async def render_sliced(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    turns: Turns | None = None,
) -> web.Response:
    """`template` as aiohttp_jinja2 renders it, giving the loop a turn every SLICE seconds.

    Jinja yields a page piece by piece (each row of a loop is one piece), so between pieces
    the loop can run whatever became ready: a lookup then waits at most about a slice for
    the page instead of for all of it. The text is encoded slice by slice too, so the end of
    the page is not one long step. `turns` carries on the slices of work done before.
    """
    env = request.config_dict[aiohttp_jinja2.APP_KEY]
    turns = turns or Turns(request)
    parts: list[str] = []
    body: list[bytes] = []
    for part in env.get_template(template).generate(context):
        parts.append(part)
        if turns.due():
            body.append("".join(parts).encode())
            parts.clear()
            await turns.take()
    body.append("".join(parts).encode())
    return web.Response(
        status=status, body=b"".join(body), content_type="text/html", charset="utf-8"
    )
