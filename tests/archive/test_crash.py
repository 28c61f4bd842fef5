"""kill -9 of the real service mid-download, then a restart: the job completes, the device hears."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.badserver import BadMediaServer
from tests.support.processes import Service
from tests.support.service import Footage, rfc3339

DEVICE = "phone-crash"


@pytest.fixture
async def service_process(
    tmp_path: Path, unused_tcp_port_factory: Callable[[], int]
) -> AsyncIterator[Service]:
    """A service child process; killed at the end whatever happened."""
    service = Service(tmp_path / "data", unused_tcp_port_factory())
    yield service
    if service.process is not None and service.process.poll() is None:
        service.kill()


async def _json(response: aiohttp.ClientResponse) -> Any:
    assert response.status < 300, await response.text()
    return await response.json()


async def test_kill_9_mid_download_then_restart_completes_and_pushes(
    service_process: Service,
    footage: Footage,
    bad_media: tuple[BadMediaServer, str],
) -> None:
    """The interrupted job resumes after a crash, ends ready, and the device is told."""
    server, media_url = bad_media
    server.mode = "trickle"
    service = service_process
    # On a shared database the restarted process waits for the dead one's lease to lapse
    # (another process might still hold the job); a short lease keeps that wait short.
    service.env["VMS_JOB_LEASE"] = "3s"
    service.cli("camera", "add", "1", "--name", "Gate", "--media-server", media_url)
    service.cli("user", "add", "alice", "--password", "pw-alice-long", "--camera", "1")
    await service.start()
    base = f"http://127.0.0.1:{service.port}"
    async with aiohttp.ClientSession() as http:
        answer = await _json(
            await http.post(
                f"{base}/api/v1/token",
                json={"login": "alice", "password": "pw-alice-long"},
                headers={"X-Client": "ios-cctv", "X-UUID": DEVICE},
            )
        )
        headers = {
            "Authorization": f"Bearer {answer['access_token']}",
            "X-Client": "ios-cctv",
            "X-UUID": DEVICE,
        }
        start = footage.start
        queued = await _json(
            await http.get(
                f"{base}/api/v1/cameras/1/archive/link",
                params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
                headers=headers,
            )
        )
        download_id = queued["download"]["id"]
        for _ in range(200):
            data = (
                await _json(
                    await http.get(f"{base}/api/v1/downloads/{download_id}", headers=headers)
                )
            )["data"]
            if data["status"] == "in progress" and list((service.data / "archives").glob("*.part")):
                break
            await asyncio.sleep(0.05)
        assert data["status"] == "in progress"

        assert service.kill() == -signal.SIGKILL
        assert list((service.data / "archives").glob("*.part")), "a partial file was being written"
        server.mode = "ok"
        await service.start()

        app_key = (await _json(await http.get(f"{base}/api/v1/wsurl", headers=headers)))["app_key"]
        async with http.ws_connect(f"{base}/ws/app/{app_key}?protocol=7&client=py") as ws:
            hello = await ws.receive_json(timeout=5)
            socket_id = json.loads(hello["data"])["socket_id"]
            channel = f"private-token.{answer['user']['access_token_id']}"
            auth = await _json(
                await http.post(
                    f"{base}/broadcasting/auth",
                    data={"socket_id": socket_id, "channel_name": channel},
                    headers=headers,
                )
            )
            await ws.send_json(
                {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth["auth"]}}
            )
            event: dict[str, Any] = {}
            while event.get("type") != "archive_generated":
                frame = await ws.receive_json(timeout=20)
                if frame["event"] == "App\\Events\\TokenPush":
                    event = json.loads(frame["data"])
        assert event["status"] == "ok"
        assert event["data"]["download"]["id"] == download_id
        assert event["data"]["download"]["status"] == "ready"
        async with http.get(event["data"]["download"]["url"]) as response:
            assert response.status == 200
            assert await response.read() == server.body
        assert service.kill(signal.SIGTERM) == 0
    names = sorted(p.name for p in (service.data / "archives").iterdir())
    assert names == [f"{download_id}.mp4", f"{download_id}.poster.jpg"]


async def test_sigterm_closes_sockets_with_1001_and_exits_cleanly(
    service_process: Service,
) -> None:
    """SIGTERM: every WebSocket gets close code 1001 (going away) and the process exits 0."""
    service = service_process
    await service.start()
    base = f"http://127.0.0.1:{service.port}"
    async with aiohttp.ClientSession() as http:
        wsurl = await http.get(f"{base}/api/v1/wsurl", headers={"X-Client": "web", "X-UUID": "w"})
        app_key = (await wsurl.json())["app_key"]
        sockets = [
            await http.ws_connect(f"{base}/ws/app/{app_key}?protocol=7&client=py") for _ in range(3)
        ]
        for ws in sockets:
            assert (await ws.receive_json(timeout=5))["event"] == "pusher:connection_established"
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        for ws in sockets:
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == aiohttp.WSCloseCode.GOING_AWAY
            await ws.close()
    assert await asyncio.to_thread(service.process.wait, 30) == 0
