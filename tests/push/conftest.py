"""Fixtures for push across processes: a real redis-server, and two services sharing it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace

import pytest
import redis.asyncio

from tests.support.redis import RedisServer, redis_binary
from tests.support.service import Client, seed
from vms.app import create_app
from vms.config import Config
from vms.store import Database

Pair = tuple[Client, Client]


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    """Debian's redis-server; skipped where it is missing, but under CI that is a failure."""
    binary = redis_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing; scripts/setup.sh test installs it")
        pytest.skip("redis-server is needed for the push-across-processes tests")
    return binary


@pytest.fixture(scope="session")
def redis_server(
    redis_server_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """One redis-server for this test worker, on a port of its range, without persistence."""
    server = RedisServer(redis_server_binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


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
    """Start services A and B on one SQLite file and one Redis, as two processes of a site."""

    async def start(url: str) -> Pair:
        db = await Database.open(config.database_path)
        try:
            await seed(db, media_server, password_hash)
        finally:
            await db.close()
        # One site: one public URL (the token issuer), one DATA, one Redis.
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
