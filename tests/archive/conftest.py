"""Fixtures for server-side archive tests: a misbehaving media server and a Pusher client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.archive.badserver import BadMediaServer, make_mp4, serve
from tests.conftest import bearer
from vms import appkeys

Client = TestClient[web.Request, web.Application]


@pytest.fixture(scope="session")
def mp4_body() -> bytes:
    """A real MP4 the misbehaving server sends when it behaves."""
    return make_mp4()


@pytest.fixture
async def bad_media(
    mp4_body: bytes, unused_tcp_port_factory: Callable[[], int]
) -> AsyncIterator[tuple[BadMediaServer, str]]:
    """A media server on loopback whose /get misbehaves as its `mode` says."""
    server = BadMediaServer(body=mp4_body)
    generator = serve(server, unused_tcp_port_factory())
    url = await generator.__anext__()
    yield server, url
    await generator.aclose()


@pytest.fixture
async def bad_camera(service: Client, bad_media: tuple[BadMediaServer, str]) -> BadMediaServer:
    """Camera 1 moved onto the misbehaving media server."""
    server, url = bad_media
    await service.app[appkeys.DB].put_camera(1, "Gate", "camera1", url, datetime.now(UTC))
    return server


async def wait_status(
    client: Client,
    answer: dict[str, Any],
    download_id: int,
    wanted: set[str],
    *,
    device: str = "phone-1",
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll GET /api/v1/downloads/{id} until its status is one of `wanted`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(
            f"/api/v1/downloads/{download_id}", headers=bearer(answer, device, "ios-cctv")
        )
        assert response.status == 200
        data: dict[str, Any] = (await response.json())["data"]
        if data["status"] in wanted:
            return data
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"download stuck in {data['status']!r}")
        await asyncio.sleep(0.05)


class PusherClient:
    """A plain protocol-7 client: connect, authorise a private channel, read events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def connect(cls, client: Client) -> PusherClient:
        """Open the socket with the app key and read pusher:connection_established."""
        app_key = client.app[appkeys.KEYSTORE].app_key
        ws = await client.ws_connect(f"/ws/app/{app_key}?protocol=7&client=py&version=1")
        hello = await ws.receive_json(timeout=5)
        assert hello["event"] == "pusher:connection_established"
        return cls(ws, json.loads(hello["data"])["socket_id"])

    async def subscribe(self, client: Client, answer: dict[str, Any], device: str) -> str:
        """Authorise and subscribe to the session's private-token channel; its name."""
        channel = f"private-token.{answer['user']['access_token_id']}"
        response = await client.post(
            "/broadcasting/auth",
            data={"socket_id": self.socket_id, "channel_name": channel},
            headers=bearer(answer, device, "ios-cctv"),
        )
        assert response.status == 200, await response.text()
        auth = (await response.json())["auth"]
        await self.ws.send_json(
            {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}
        )
        return channel

    async def next_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """The data (decoded) of the next frame named `name`, skipping others."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await self.ws.receive(timeout=max(0.01, remaining))
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {message.type!r}")
            frame = json.loads(message.data)
            if frame["event"] == name:
                data: dict[str, Any] = json.loads(frame["data"])
                return data

    async def archive_event(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next App\\Events\\TokenPush of `type` kind."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            data = await self.next_event(
                "App\\Events\\TokenPush", deadline - asyncio.get_running_loop().time()
            )
            if data["type"] == kind:
                return data
