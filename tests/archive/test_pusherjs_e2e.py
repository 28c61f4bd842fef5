"""A phone end to end: stock pusher-js and Laravel Echo under node against the real service."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.badserver import BadMediaServer
from tests.support.phone import Phone, Record, phone_config, running_phone
from tests.support.service import Client, Footage, bearer, login, rfc3339, wait_status
from vms import appkeys
from vms.archive.mp4check import check_mp4

pytestmark = pytest.mark.node

PHONE = "phone-e2e"
X_CLIENT = "ios-cctv"


@contextlib.asynccontextmanager
async def phone(
    node: str, service: Client, answer: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Phone]:
    """Node running pusher-js and Echo, configured from GET /api/v1/wsurl, both subscribed."""
    response = await service.get("/api/v1/wsurl", headers={"X-Client": X_CLIENT, "X-UUID": PHONE})
    assert response.status == 200
    wsurl = await response.json()
    assert wsurl["path"] == "/ws" and wsurl["port"] == service.port
    auth = str(service.make_url("/broadcasting/auth"))
    config = phone_config(wsurl, auth, answer, PHONE, X_CLIENT, tmp_path / "from-node.mp4")
    async with running_phone(node, config, tmp_path) as device:
        yield device


def _generated(record: Record) -> bool:
    return bool(record["data"]["type"] == "archive_generated")


async def test_pusher_js_gets_the_archive_push_and_downloads_the_whole_mp4(
    node: str, service: Client, footage: Footage, tmp_path: Path
) -> None:
    """pusher-js and Echo get archive_generated; node's fetch of its URL is the file on disk."""
    answer = await login(service, device=PHONE, x_client=X_CLIENT)
    async with phone(node, service, answer, tmp_path) as device:
        start = footage.start + timedelta(seconds=30)
        response = await service.get(
            "/api/v1/cameras/1/archive/link",
            params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=2))},
            headers=bearer(answer, PHONE, X_CLIENT),
        )
        assert response.status == 202
        download_id = (await response.json())["download"]["id"]

        pushed = (await device.next("pusher", "event", _generated))["data"]
        assert pushed["status"] == "ok" and pushed["message"] is None
        assert pushed["data"]["download"]["id"] == download_id
        assert pushed["data"]["download"]["status"] == "ready"
        echoed = (await device.next("echo", "event", _generated))["data"]
        assert echoed == pushed

        fetched = await device.next("pusher", "download")
        on_disk = service.app[appkeys.FILES].path(download_id).read_bytes()
        assert fetched["status"] == 200 and fetched["contentType"] == "video/mp4"
        assert fetched["size"] == len(on_disk)
        assert bytes.fromhex(fetched["head"])[4:8] == b"ftyp"
        assert fetched["sha256"] == hashlib.sha256(on_disk).hexdigest()
        assert device.saved.read_bytes() == on_disk
        assert abs(check_mp4(device.saved) - 120) <= 2
        assert await device.quit() == 0


async def test_ending_the_session_closes_pusher_js_for_good(
    node: str, service: Client, tmp_path: Path
) -> None:
    """POST /api/v1/sessions/{id} closes both sockets with 4009 and neither reconnects."""
    answer = await login(service, device=PHONE, x_client=X_CLIENT)
    hub = service.app[appkeys.HUB]
    async with phone(node, service, answer, tmp_path) as device:
        assert hub.connection_count == 2
        response = await service.post(
            f"/api/v1/sessions/{answer['user']['access_token_id']}",
            headers=bearer(answer, PHONE, X_CLIENT),
        )
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
        for client in ("pusher", "echo"):
            await device.next(client, "error", lambda record: record["code"] == 4009)
            await device.next(client, "state", lambda record: record["current"] == "disconnected")
        await asyncio.sleep(1.5)  # pusher-js would have reconnected at once on a 42xx code
        assert hub.connection_count == 0
        assert await device.quit() == 0
        for client in ("pusher", "echo"):
            states = [
                (r["previous"], r["current"])
                for r in device.seen
                if r["client"] == client and r["type"] == "state"
            ]
            assert states == [("connecting", "connected"), ("connected", "disconnected")]


async def test_a_connection_cut_mid_job_still_gets_the_archive_after_reconnecting(
    node: str, service: Client, footage: Footage, tmp_path: Path, bad_camera: BadMediaServer
) -> None:
    """The network drops pusher-js's socket while the archive is fetched; it reconnects,
    resubscribes, and archive_generated reaches it when the archive is ready."""
    bad_camera.mode = "stall"
    answer = await login(service, device=PHONE, x_client=X_CLIENT)
    hub = service.app[appkeys.HUB]
    async with phone(node, service, answer, tmp_path) as device:
        start = footage.start + timedelta(seconds=30)
        response = await service.get(
            "/api/v1/cameras/1/archive/link",
            params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
            headers=bearer(answer, PHONE, X_CLIENT),
        )
        assert response.status == 202
        download_id = (await response.json())["download"]["id"]
        await wait_status(service, answer, download_id, {"in progress"}, device=PHONE)
        # A cut cable: the TCP connections die without a closing handshake.
        for conn in list(hub._connections.values()):
            conn.abort()
        await device.next("pusher", "state", lambda r: r["current"] != "connected")
        await device.next("pusher", "state", lambda r: r["current"] == "connected")
        await device.next("pusher", "subscribed")
        bad_camera.mode = "ok"  # the media server recovers: the retry fetches it whole
        bad_camera.release.set()
        pushed = (await device.next("pusher", "event", _generated))["data"]
        assert pushed["status"] == "ok"
        assert pushed["data"]["download"]["id"] == download_id
        assert (await device.next("pusher", "download"))["status"] == 200
        assert await device.quit() == 0
