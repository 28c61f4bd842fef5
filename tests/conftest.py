"""Shared fixtures: a real service on 127.0.0.1 with a real SQLite file, keys and media server."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from vms.app import create_app
from vms.config import Config
from vms.keystore import load_or_create
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.mediaserver.synthetic import write_segment
from vms.passwords import hash_password
from vms.store import Database

PASSWORD = "correct horse battery staple"
# Recordings cover [RECORDED_FROM, RECORDED_TO) for both cameras, in one-minute segments,
# with a gap of one minute in the middle of camera 2's.
SEGMENT_SECONDS = 60
SEGMENTS = 6


@dataclasses.dataclass(frozen=True)
class Footage:
    """Where the test recordings are and what time they cover."""

    root: Path
    start: datetime
    end: datetime


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@pytest.fixture(scope="session")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Footage:
    """Real H.264 recordings in MediaMTX's layout, ending a few minutes ago."""
    root = tmp_path_factory.mktemp("recordings")
    end = _minute(datetime.now(UTC)) - timedelta(minutes=2)
    start = end - timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
    for path, name, skip in (("camera1", "Gate", None), ("camera2", "Lobby", 3)):
        directory = root / path
        directory.mkdir()
        for index in range(SEGMENTS):
            if index == skip:
                continue
            write_segment(
                directory,
                name,
                start + timedelta(seconds=SEGMENT_SECONDS * index),
                SEGMENT_SECONDS,
                fps=5,
                size=(320, 180),
                gop_seconds=2.0,
            )
    return Footage(root, start, end)


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One scrypt hash shared by the seeded users, so seeding stays fast."""
    return hash_password(PASSWORD)


@pytest.fixture
def config(tmp_path: Path, unused_tcp_port_factory: Callable[[], int]) -> Config:
    """Settings for one test: its own data directory and port, no embedded media server."""
    port = unused_tcp_port_factory()
    return Config(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        port=port,
        media_port=0,
        demo_cameras=False,
        fetch_backoff=0.05,
        fetch_read_timeout=2.0,
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


@dataclasses.dataclass
class Seeded:
    """The users and cameras every API test starts with."""

    alice: int  # sees camera 1
    bob: int  # sees camera 2
    admin: int  # operator: sees everything


async def seed(db: Database, media_url: str, password_hash: str) -> Seeded:
    """Cameras 1 (Gate) and 2 (Lobby) on `media_url`, camera 3 nobody is granted, three users."""
    now = datetime.now(UTC)
    for camera_id, name in ((1, "Gate"), (2, "Lobby"), (3, "Yard")):
        await db.put_camera(camera_id, name, f"camera{camera_id}", media_url, now)
    alice = await db.create_user("alice", "Alice", password_hash, is_admin=False, now=now)
    bob = await db.create_user("bob", "Bob", password_hash, is_admin=False, now=now)
    admin = await db.create_user("admin", "Operator", password_hash, is_admin=True, now=now)
    await db.grant(alice.id, 1)
    await db.grant(bob.id, 2)
    return Seeded(alice.id, bob.id, admin.id)


@pytest.fixture
async def service(
    config: Config,
    media_server: str,
    password_hash: str,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> TestClient[web.Request, web.Application]:
    """The whole service on 127.0.0.1 (config.port), seeded, with a media server behind it."""
    db = await Database.open(config.database_path)
    try:
        await seed(db, media_server, password_hash)
    finally:
        await db.close()
    return await aiohttp_client(create_app(config), server_kwargs={"port": config.port})


async def login(
    client: TestClient[web.Request, web.Application],
    user: str = "alice",
    *,
    device: str = "device-a",
    x_client: str = "thick-legal",
) -> dict[str, Any]:
    """Log in through the API; the whole 200 answer."""
    response = await client.post(
        "/api/v1/token",
        json={"login": user, "password": PASSWORD},
        headers={"X-Client": x_client, "X-UUID": device},
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def bearer(
    answer: dict[str, Any], device: str = "device-a", x_client: str = "thick-legal"
) -> dict[str, str]:
    """Headers of an authenticated request for a login answer."""
    return {
        "Authorization": f"Bearer {answer['access_token']}",
        "X-UUID": device,
        "X-Client": x_client,
    }


def rfc3339(moment: datetime) -> str:
    """A UTC RFC 3339 string for a query."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NODE_DIR = Path(__file__).resolve().parent / "node"


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
