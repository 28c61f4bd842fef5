"""A plain Pusher protocol-7 client over the test client, for tests that read pushes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.support.service import Client, bearer
from vms import appkeys


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
