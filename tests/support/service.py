"""Helpers for tests of the whole service: the seeded world, logins, headers and polls."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from vms.mediaserver.synthetic import write_segment
from vms.store import Store

# The test client of the service (or of any one sub-application) every test drives.
Client = TestClient[web.Request, web.Application]

PASSWORD = "correct horse battery staple"
PHONE = "phone-1"
# Recordings cover [start, end) for both cameras, in one-minute segments,
# with a gap of one minute in the middle of camera 2's.
SEGMENT_SECONDS = 60
SEGMENTS = 6


@dataclasses.dataclass(frozen=True)
class Footage:
    """Where the test recordings are and what time they cover."""

    root: Path
    start: datetime
    end: datetime


# (path, camera name, index of the missing segment or None)
CAMERAS: tuple[tuple[str, str, int | None], ...] = (
    ("camera1", "Gate", None),
    ("camera2", "Lobby", 3),
)


def write_footage(
    root: Path,
    segments: int = SEGMENTS,
    *,
    cameras: tuple[tuple[str, str, int | None], ...] = CAMERAS,
    fps: int = 5,
    size: tuple[int, int] = (320, 180),
    gop_seconds: float = 2.0,
) -> Footage:
    """Real H.264 one-minute segments in MediaMTX's layout under `root`, ending 2 minutes ago."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    start = end - timedelta(seconds=SEGMENT_SECONDS * segments)
    for path, name, skip in cameras:
        directory = root / path
        directory.mkdir(parents=True)
        for index in range(segments):
            if index == skip:
                continue
            moment = start + timedelta(seconds=SEGMENT_SECONDS * index)
            write_segment(
                directory,
                name,
                moment,
                SEGMENT_SECONDS,
                fps=fps,
                size=size,
                gop_seconds=gop_seconds,
            )
    return Footage(root, start, end)


@dataclasses.dataclass
class Seeded:
    """The users and cameras every API test starts with."""

    alice: int  # sees camera 1
    bob: int  # sees camera 2
    admin: int  # operator: sees everything


async def sql_rows(db: Store, sql: str) -> list[Any]:
    """The rows of one parameterless query, on either engine: for tests that look inside."""
    found = await db._all(sql)  # type: ignore[attr-defined]
    return list(found)


async def sql_write(db: Store, sql: str) -> int:
    """Run one parameterless write on either engine: for tests that set up what no API does."""
    changed = await db._write(sql)  # type: ignore[attr-defined]
    return int(changed)


async def seed(db: Store, media_url: str, password_hash: str) -> Seeded:
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


async def login(
    client: Client,
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


def archive_range(footage: Footage, minutes: int = 2) -> dict[str, str]:
    """The `from`/`to` query of `minutes` of footage starting 30 s into the recordings."""
    start = footage.start + timedelta(seconds=30)
    return {"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=minutes))}


async def ask_archive(
    client: Client,
    answer: dict[str, Any],
    footage: Footage,
    *,
    camera: int = 1,
    device: str = PHONE,
) -> tuple[int, dict[str, Any]]:
    """Ask for an archive link as a phone: the status and the JSON answer."""
    response = await client.get(
        f"/api/v1/cameras/{camera}/archive/link",
        params=archive_range(footage),
        headers=bearer(answer, device, "ios-cctv"),
    )
    return response.status, await response.json()


async def wait_status(
    client: Client,
    answer: dict[str, Any],
    download_id: int,
    wanted: set[str],
    *,
    device: str = PHONE,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll GET /api/v1/downloads/{id} until its status is one of `wanted`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get(
            f"/api/v1/downloads/{download_id}", headers=bearer(answer, device, "ios-cctv")
        )
        assert response.status == 200
        data: dict[str, Any] = (await response.json())["data"]
        if data["status"] in wanted:
            return data
        if loop.time() > deadline:
            raise AssertionError(f"download stuck in {data['status']!r}")
        # A request costs about a millisecond on loopback: poll often, finish soon after.
        await asyncio.sleep(0.01)


async def ready_archive(
    client: Client, footage: Footage, user: str = "alice", *, device: str = PHONE
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A phone login of `user` and the ready archive (DOWNLOAD) it asked for."""
    phone = await login(client, user, device=device, x_client="ios-cctv")
    _, body = await ask_archive(client, phone, footage, device=device)
    ready = await wait_status(client, phone, body["download"]["id"], {"ready"}, device=device)
    return phone, ready


async def running_archive(
    client: Client, footage: Footage, user: str = "alice", *, device: str = PHONE
) -> tuple[dict[str, Any], int]:
    """A phone login of `user` and the id of the archive it asked for, once it is being made."""
    phone = await login(client, user, device=device, x_client="ios-cctv")
    _, body = await ask_archive(client, phone, footage, device=device)
    download_id: int = body["download"]["id"]
    await wait_status(client, phone, download_id, {"in progress"}, device=device)
    return phone, download_id
