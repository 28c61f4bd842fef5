"""Fixtures for push across processes: two services sharing one redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
import redis.asyncio

from tests.support.redis import RedisServer
from tests.support.service import Client, seed
from vms.app import create_app
from vms.config import Config
from vms.store import open_store

Pair = tuple[Client, Client]


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The shared server's URL, emptied first so throttles start from zero."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushdb()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
def start_pair(
    config: Config,
    media_server: str,
    password_hash: str,
    unused_tcp_port_factory: Callable[[], int],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Callable[[str], Awaitable[Pair]]:
    """Start services A and B on one store and one Redis, as two processes of a site."""

    async def start(url: str) -> Pair:
        db = await open_store(config)
        try:
            await seed(db, media_server, password_hash)
        finally:
            await db.close()
        # One site: one public URL (the token issuer), one store, one Redis.
        first = replace(config, redis_url=url, public_url=f"http://127.0.0.1:{config.port}")
        second = replace(first, port=unused_tcp_port_factory())
        a = await aiohttp_client(create_app(first), server_kwargs={"port": first.port})
        b = await aiohttp_client(create_app(second), server_kwargs={"port": second.port})
        return a, b

    return start


@pytest.fixture
async def pair(start_pair: Callable[[str], Awaitable[Pair]], redis_url: str) -> Pair:
    """Services A and B over the worker's redis-server."""
    return await start_pair(redis_url)
