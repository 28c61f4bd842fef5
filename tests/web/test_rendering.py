"""Work on the loop done in pieces gives other requests a turn once its slice is used up."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from vms.foreground import FOREGROUND, MAX_WAIT, Foreground
from vms.web.rendering import SLICE, Turns


def _request(foreground: Foreground) -> web.Request:
    app = web.Application()
    app[FOREGROUND] = foreground
    return make_mocked_request("GET", "/history", app=app)


async def test_a_slice_is_due_only_once_its_time_is_used() -> None:
    """Just begun, the work goes on; after SLICE of it, it is due to give the loop a turn."""
    turns = Turns(_request(Foreground()))
    assert not turns.due()
    ends = time.perf_counter() + SLICE
    while time.perf_counter() < ends:
        pass
    assert turns.due()
    await turns.take()
    assert not turns.due()


async def test_a_turn_lets_whatever_is_ready_run() -> None:
    """A task made ready before the turn has run by the time the work goes on."""
    turns = Turns(_request(Foreground()))
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    await turns.take()
    assert ran.is_set()


async def test_a_turn_waits_for_a_running_api_request_up_to_the_cap() -> None:
    """With an API request in flight the turn lasts until it ends, never past MAX_WAIT."""
    foreground = Foreground()
    turns = Turns(_request(foreground))
    with foreground.request():
        waiter = asyncio.create_task(turns.take())
        await asyncio.sleep(0)
        assert not waiter.done()
    await asyncio.wait_for(waiter, 1)

    with foreground.request():
        started = time.perf_counter()
        await asyncio.wait_for(turns.take(), 1)
        assert time.perf_counter() - started >= MAX_WAIT * 0.9
