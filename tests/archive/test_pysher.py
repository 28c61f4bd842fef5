"""The stock pysher client (PyPI), with no path or protocol overrides, gets an archive push.

pysher connects to Pusher's own path `/app/{key}` with protocol 6 and authorises its private
channel by posting a form to the auth endpoint, as Pusher's Android library does too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pysher

from tests.support.service import Client, Footage, bearer, login, rfc3339, wait_status
from vms import appkeys

PHONE = "android-1"


async def test_pysher_receives_the_archive_it_asked_for(service: Client, footage: Footage) -> None:
    """Connect, subscribe to the session's channel, ask for an archive: the push arrives."""
    answer = await login(service, device=PHONE, x_client="android-cctv")
    assert service.server.host is not None and service.server.port is not None
    connected, subscribed, generated = threading.Event(), threading.Event(), threading.Event()
    received: list[dict[str, Any]] = []
    channel_name = f"private-token.{answer['user']['access_token_id']}"
    client = pysher.Pusher(
        service.app[appkeys.KEYSTORE].app_key,
        secure=False,
        custom_host=service.server.host,
        port=service.server.port,
        auth_endpoint=f"http://{service.server.host}:{service.server.port}/broadcasting/auth",
        auth_endpoint_headers={"Authorization": f"Bearer {answer['access_token']}"},
        log_level=logging.WARNING,
    )

    def on_event(data: str) -> None:
        event = json.loads(data)
        received.append(event)
        if event["type"] == "archive_generated":
            generated.set()

    def on_connect(data: str) -> None:
        connected.set()
        channel = client.subscribe(channel_name)
        channel.bind("pusher_internal:subscription_succeeded", lambda _: subscribed.set())
        channel.bind("App\\Events\\TokenPush", on_event)

    client.connection.bind("pusher:connection_established", on_connect)
    client.connect()
    try:
        assert await asyncio.to_thread(connected.wait, 10), "pysher did not connect"
        assert await asyncio.to_thread(subscribed.wait, 10), "pysher was not subscribed"
        start = footage.start + timedelta(seconds=30)
        response = await service.get(
            "/api/v1/cameras/1/archive/link",
            params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
            headers=bearer(answer, PHONE, "android-cctv"),
        )
        assert response.status == 202
        download = (await response.json())["download"]
        assert await asyncio.to_thread(generated.wait, 20), "no archive_generated arrived"
        ready = [e for e in received if e["type"] == "archive_generated"][-1]
        assert ready["status"] == "ok"
        assert ready["data"]["download"]["id"] == download["id"]
        assert ready["data"]["download"]["url"]
        await wait_status(service, answer, download["id"], {"ready"}, device=PHONE)
    finally:
        await asyncio.to_thread(client.disconnect, 5)
