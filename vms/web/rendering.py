"""Big pages rendered in slices, so the event loop answers other requests while they draw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from vms.foreground import FOREGROUND

# The longest the loop is kept by one slice of a page (s). An operator's history page takes
# several ms to draw; a `GET /api/v1/downloads/{id}` beside it takes about one.
SLICE = 0.0002


async def render_sliced(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """`template` as aiohttp_jinja2 renders it, giving the loop a turn every SLICE seconds.

    Jinja yields a page piece by piece (each row of a loop is one piece), so between pieces
    the loop can run whatever became ready: a lookup then waits at most about a slice for
    the page instead of for all of it; while an API request runs, the next slice waits for
    it a little (`vms.foreground`).
    """
    env = request.config_dict[aiohttp_jinja2.APP_KEY]
    foreground = request.config_dict.get(FOREGROUND)
    parts: list[str] = []
    clock = time.perf_counter
    deadline = clock() + SLICE
    for part in env.get_template(template).generate(context):
        parts.append(part)
        if clock() >= deadline:
            await asyncio.sleep(0)
            if foreground is not None:
                await foreground.wait_turn()
            deadline = clock() + SLICE
    return web.Response(
        status=status, text="".join(parts), content_type="text/html", charset="utf-8"
    )
