"""The throttles, in process and in a real Redis: the same answers, and atomic across processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from tests.support.processes import worker_port
from vms.throttle import LocalThrottle, RedisThrottle, Throttle

Make = Callable[[int, float], Throttle]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the worker's redis-server, emptied."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=["local", "redis"])
def make(request: pytest.FixtureRequest, client: redis.asyncio.Redis) -> Make:
    """A factory of throttles of either kind."""
    if request.param == "local":
        return lambda limit, window: LocalThrottle(limit, window)
    return lambda limit, window: RedisThrottle(client, "test", limit, window)


async def test_past_the_limit_a_key_waits_and_others_do_not(make: Make) -> None:
    """Three hits allowed in the window; the fourth waits about the window; another key is free."""
    throttle = make(3, 30.0)
    for _ in range(3):
        assert await throttle.retry_after("k") == 0
        await throttle.hit("k")
    assert 29 <= await throttle.retry_after("k") <= 30
    assert await throttle.retry_after("other") == 0


async def test_take_counts_only_what_it_allows(make: Make) -> None:
    """take() says 0 and counts up to the limit, then the wait, without counting more."""
    throttle = make(2, 30.0)
    assert [await throttle.take("k") for _ in range(4)][:2] == [0, 0]
    assert await throttle.take("k") >= 29
    await throttle.clear("k")
    assert await throttle.take("k") == 0


async def test_hits_leave_the_window(make: Make) -> None:
    """After the window has passed the key may try again."""
    throttle = make(1, 0.3)
    await throttle.hit("k")
    assert await throttle.retry_after("k") == 1  # rounded up to whole seconds
    await asyncio.sleep(0.4)
    assert await throttle.retry_after("k") == 0


async def test_concurrent_takes_from_two_processes_never_pass_the_limit(
    client: redis.asyncio.Redis, redis_url: str
) -> None:
    """Two throttles (as two processes, each with its own client) racing: exactly 20 pass."""
    other = redis.asyncio.Redis.from_url(redis_url)
    try:
        first = RedisThrottle(client, "wsurl", 20, 300.0)
        second = RedisThrottle(other, "wsurl", 20, 300.0)
        answers = await asyncio.gather(
            *(throttle.take("phone") for _ in range(30) for throttle in (first, second))
        )
    finally:
        await other.aclose()
    assert answers.count(0) == 20
    assert all(298 <= answer <= 300 for answer in answers if answer)


async def test_keys_live_under_the_prefix_and_expire(client: redis.asyncio.Redis) -> None:
    """What a throttle keeps in Redis is under vms:throttle: and expires with its window."""
    throttle = RedisThrottle(client, "login", 5, 60.0)
    await throttle.hit("login:alice")
    keys = [key async for key in client.scan_iter("*")]
    assert len(keys) == 1 and keys[0].startswith(b"vms:throttle:login:")
    assert b"alice" not in keys[0]  # logins are hashed, never shown
    assert 59_000 <= await client.pttl(keys[0]) <= 60_000


async def test_without_redis_a_throttle_counts_in_process_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis unreachable: the limit still holds (in this process) and one warning is logged."""
    nowhere = redis.asyncio.Redis.from_url(
        f"redis://127.0.0.1:{worker_port()}/0", socket_connect_timeout=1
    )
    try:
        throttle = RedisThrottle(nowhere, "login", 2, 30.0)
        assert [await throttle.take("k") for _ in range(3)][:2] == [0, 0]
        assert await throttle.retry_after("k") >= 29
    finally:
        await nowhere.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "counting in this process" in warnings[0].getMessage()
