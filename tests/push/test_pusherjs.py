"""Stock pusher-js and Laravel Echo, run by node, against the hub on a real 127.0.0.1 server."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.processes import NODE_DIR
from vms.push.hub import Hub
from vms.push.signing import sign_channel

pytestmark = pytest.mark.node

SCRIPT = NODE_DIR / "pusher_client.mjs"
APP_KEY, APP_SECRET = "vms-test-key", "vms-test-secret"
CHANNEL = "private-token.abc"
FORGED = "private-user.forged"
EVENT = "App\\Events\\TokenPush"


def make_app(hub: Hub) -> web.Application:
    """The hub plus a test-only auth route that signs like the real one."""

    async def broadcasting_auth(request: web.Request) -> web.Response:
        form = await request.post()
        socket_id, channel = str(form.get("socket_id", "")), str(form.get("channel_name", ""))
        if channel == FORGED:  # an auth endpoint that signs wrongly
            return web.json_response({"auth": f"{APP_KEY}:{'0' * 64}"})
        if channel != CHANNEL:
            raise web.HTTPForbidden()
        session = request.headers.get("Authorization", "").removeprefix("Bearer ")
        hub.bind_session(socket_id, session)
        return web.json_response({"auth": sign_channel(APP_KEY, APP_SECRET, socket_id, channel)})

    async def close_sockets(app: web.Application) -> None:
        await hub.close_all()

    app = web.Application()
    app.router.add_get("/ws/app/{app_key}", hub.handle)
    app.router.add_post("/broadcasting/auth", broadcasting_auth)
    app.on_shutdown.append(close_sockets)
    return app


class Records:
    """The JSON lines the node client prints, awaited by content."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._pending: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []

    async def next(self, wait: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first record, old or new, whose fields equal `match`."""
        try:
            async with asyncio.timeout(wait):
                while True:
                    for record in self._pending:
                        if all(record.get(k) == v for k, v in match.items()):
                            self._pending.remove(record)
                            return record
                    assert self._process.stdout is not None
                    line = await self._process.stdout.readline()
                    if not line:
                        raise AssertionError(f"node exited waiting for {match}: {self.seen}")
                    record = json.loads(line)
                    self.seen.append(record)
                    self._pending.append(record)
        except TimeoutError:
            raise AssertionError(f"no {match} from node; saw {self.seen}") from None

    async def send(self, command: str) -> None:
        """One command line to the node client."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{command}\n".encode())
        await self._process.stdin.drain()


async def test_pusher_js_and_laravel_echo_work_unchanged(
    node: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    """pusher-js and Echo subscribe, get events and pongs; refusals arrive as Pusher errors."""
    hub = Hub(APP_KEY, APP_SECRET)
    server = await aiohttp_server(make_app(hub), host="127.0.0.1")
    config = {
        "host": "127.0.0.1",
        "port": server.port,
        "key": APP_KEY,
        "authEndpoint": f"http://127.0.0.1:{server.port}/broadcasting/auth",
        "channel": CHANNEL,
        "forgedChannel": FORGED,
        "event": EVENT,
    }
    with (tmp_path / "node-stderr.txt").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PUSH_TEST_CONFIG": json.dumps(config)},
        )
        records = Records(process)
        try:
            connected = await records.next(client="pusher", type="connected")
            assert re.fullmatch(r"\d+\.\d+", connected["socket_id"])
            await records.next(client="pusher", type="subscribed", channel=CHANNEL)
            await records.next(client="echo", type="subscribed", channel=CHANNEL)

            await records.next(client="stranger", type="error", code=4001)
            await records.next(client="stranger", type="state", current="disconnected")

            refused = await records.next(client="pusher", type="subscription_error")
            assert refused["channel"] == FORGED
            assert refused["error"]["type"] == "AuthError" and refused["error"]["status"] == 401

            payload = {
                "type": "archive_generated",
                "status": "ok",
                "data": {"download": {"id": 7, "url": "http://127.0.0.1/archive/download/7"}},
                "subject": None,
                "message": None,
            }
            assert hub.publish(CHANNEL, EVENT, payload) == 2
            assert (await records.next(client="pusher", type="event"))["data"] == payload
            assert (await records.next(client="echo", type="event"))["data"] == payload

            await records.send("ping")
            await records.next(client="pusher", type="pong")

            # The pusher-js device's session ends: 4009, and pusher-js does not reconnect.
            assert await hub.disconnect_session("pusher-js") == 1
            await records.next(client="pusher", type="error", code=4009)
            await records.next(client="pusher", type="state", current="disconnected")
            assert hub.connection_count == 1
            assert hub.publish(CHANNEL, EVENT, {"type": "archive_progress"}) == 1
            echo_event = await records.next(client="echo", type="event")
            assert echo_event["data"] == {"type": "archive_progress"}

            await records.send("quit")
            async with asyncio.timeout(10):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for _ in range(100):
        if hub.connection_count == 0 and hub.task_count == 0:
            break
        await asyncio.sleep(0.02)
    assert hub.connection_count == 0 and hub.task_count == 0
