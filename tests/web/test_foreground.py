"""A big page being drawn waits while an API request runs, and never longer than its cap."""

from __future__ import annotations

import asyncio

from vms.foreground import Foreground


async def test_a_slice_goes_on_at_once_when_no_api_request_runs() -> None:
    """Idle API: waiting for a turn returns without waiting at all (not even the cap)."""
    foreground = Foreground()
    await asyncio.wait_for(foreground.wait_turn(limit=3600), 1)
    assert foreground.active == 0


async def test_a_slice_waits_until_the_last_api_request_ends() -> None:
    """Two requests in flight: the page's next slice runs only after both have ended."""
    foreground = Foreground()
    first, second = foreground.request(), foreground.request()
    first.__enter__()
    second.__enter__()
    waiter = asyncio.create_task(foreground.wait_turn(limit=3600))
    await asyncio.sleep(0.01)
    assert not waiter.done() and foreground.active == 2
    first.__exit__(None, None, None)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    second.__exit__(None, None, None)
    await asyncio.wait_for(waiter, 1)
    assert foreground.active == 0


async def test_a_long_api_request_delays_a_slice_only_by_the_cap() -> None:
    """A request that never ends lets the page go on after `limit`: pages are never stopped."""
    foreground = Foreground()
    with foreground.request():
        await asyncio.wait_for(foreground.wait_turn(limit=0.01), 1)
        assert foreground.active == 1


async def test_a_failing_request_still_ends_its_turn() -> None:
    """A handler that raises leaves the count as it found it."""
    foreground = Foreground()
    try:
        with foreground.request():
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    assert foreground.active == 0
    await asyncio.wait_for(foreground.wait_turn(limit=3600), 1)
