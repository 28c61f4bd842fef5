"""Shared fixtures: a real service on 127.0.0.1 with a real store, keys and media server.

The store is a SQLite file per test, or with VMS_TEST_DATABASE=postgresql a fresh database
on a real PostgreSQL server per worker (tests/support/postgres.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.support import postgres
from tests.support.processes import NODE_DIR, worker_port
from tests.support.redis import RedisServer, redis_binary
from tests.support.s3 import s3_server
from tests.support.service import PASSWORD, Client, Footage, seed, write_footage
from vms.app import create_app
from vms.config import Config
from vms.keystore import load_or_create
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.passwords import hash_password
from vms.store import open_store

__all__ = ["s3_server"]  # a fixture, for every test that needs an S3 server

# Paths relative to this directory, left out of the PostgreSQL pass (see STORELESS).
collect_ignore = list(postgres.STORELESS) if postgres.wanted() else []


@pytest.fixture
def unused_tcp_port_factory() -> Callable[[], int]:
    """pytest-asyncio's fixture, but from this xdist worker's own range of ports."""
    return worker_port


@pytest.fixture
def unused_tcp_port() -> int:
    """One port from this worker's own range."""
    return worker_port()


@pytest.fixture(scope="session")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Footage:
    """Real H.264 recordings of cameras 1 and 2 in MediaMTX's layout, ending a few minutes ago."""
    return write_footage(tmp_path_factory.mktemp("recordings"))


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One scrypt hash shared by the seeded users, so seeding stays fast."""
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[postgres.Databases | None]:
    """This worker's PostgreSQL server when the run is on it (else None), stopped at the end.

    Skipped where PostgreSQL is missing, but under CI (which installs it) that is a failure.
    """
    if not postgres.wanted():
        yield None
        return
    postgres.forget_choice()
    try:
        with postgres.running() as databases:
            yield databases
    except LookupError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; scripts/setup.sh test installs it")
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def database_url(
    postgres_databases: postgres.Databases | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """This test's own PostgreSQL database ("" on SQLite), also in VMS_DATABASE_URL.

    In the environment, so a service a test starts as a child process uses it too.
    """
    if postgres_databases is None:
        yield ""
        return
    with postgres_databases.fresh() as url:
        monkeypatch.setenv("VMS_DATABASE_URL", url)
        yield url


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
def config(tmp_path: Path, unused_tcp_port_factory: Callable[[], int], database_url: str) -> Config:
    """Settings for one test: its own data directory, port and store, no embedded media server."""
    port = unused_tcp_port_factory()
    return Config(
        data_dir=tmp_path / "data",
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        media_port=0,
        demo_cameras=False,
        fetch_backoff=0.05,
        fetch_read_timeout=2.0,
        min_free_disk=0,  # test machines may have little disk; the guard has tests of its own
    )


@pytest.fixture
async def media_server(config: Config, footage: Footage) -> AsyncIterator[str]:
    """The embedded media server on its own port, trusting the service's keys; its URL."""
    keystore = load_or_create(config.keys_dir)
    app = create_media_app(footage.root, StaticKeys(keystore.jwks()))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def service(
    config: Config,
    media_server: str,
    password_hash: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> Client:
    """The whole service on 127.0.0.1 (config.port), seeded, with a media server behind it."""
    db = await open_store(config)
    try:
        await seed(db, media_server, password_hash)
    finally:
        await db.close()
    return await aiohttp_client(create_app(config), server_kwargs={"port": config.port})


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with pusher-js and laravel-echo installed from package-lock.json.

    Skipped where node is missing, but under CI (which installs it) that is a failure.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are missing; scripts/setup.sh test installs them")
        pytest.skip("node and npm are needed for the pusher-js tests")
    installed = all(
        (NODE_DIR / "node_modules" / name / "package.json").exists()
        for name in ("pusher-js", "laravel-echo")
    )
    if not installed:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
            capture_output=True,
        )
    return node
