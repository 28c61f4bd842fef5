"""The AsyncAPI document describes the push events, and real pushed frames match it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator

from tests.support.badserver import BadMediaServer
from tests.support.pusher import PusherClient
from tests.support.service import Client, Footage, bearer, login, rfc3339, wait_status

PHONE = "phone-1"


async def _frames(pusher: PusherClient, count: int) -> list[dict[str, Any]]:
    """The next `count` application frames, whole (event, channel, data still a string)."""
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        message = await pusher.ws.receive(timeout=20)
        assert message.type == aiohttp.WSMsgType.TEXT
        frame = json.loads(message.data)
        if not frame["event"].startswith("pusher"):
            frames.append(frame)
    return frames


def _check(doc: dict[str, Any], frame: dict[str, Any], channel: str) -> str:
    """Validate one frame against the document; the message it is."""
    token = doc["channels"]["token"]
    assert frame["channel"] == channel
    assert channel.startswith(token["address"].split("{")[0])
    assert isinstance(frame["data"], str)  # Pusher sends data as a JSON string
    data = json.loads(frame["data"])
    name = {"archive_generated": "archiveGenerated", "archive_progress": "archiveProgress"}[
        data["type"]
    ]
    message = doc["components"]["messages"][name]
    assert frame["event"] == message["name"]
    validator = Draft202012Validator(
        {"allOf": [message["payload"]], "components": doc["components"]}
    )
    errors = [e.message for e in validator.iter_errors(data)]
    assert not errors, (errors, data)
    return str(data["type"])


async def _ask_subscribed(
    service: Client, footage: Footage
) -> tuple[dict[str, Any], dict[str, Any], PusherClient, str, aiohttp.ClientResponse]:
    """The document, then a phone subscribed to its channel asking for one minute."""
    doc = await (await service.get("/api/asyncapi.json")).json()
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    pusher = await PusherClient.connect(service)
    channel = await pusher.subscribe(service, answer, PHONE)
    await pusher.next_event("pusher_internal:subscription_succeeded")
    start = footage.start + timedelta(seconds=30)
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
        headers=bearer(answer, PHONE, "ios-cctv"),
    )
    return doc, answer, pusher, channel, response


async def test_the_document_is_served_and_names_the_event(service: Client) -> None:
    """GET /api/asyncapi.json: AsyncAPI 3 with the token channel and both messages."""
    response = await service.get("/api/asyncapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["token"]["address"] == "private-token.{access_token_id}"
    assert set(doc["components"]["messages"]) == {"archiveGenerated", "archiveProgress"}
    for message in doc["components"]["messages"].values():
        Draft202012Validator.check_schema(message["payload"])
    openapi = await (await service.get("/api/openapi.json")).json()
    assert doc["components"]["schemas"]["Download"] == openapi["components"]["schemas"]["Download"]


async def test_real_progress_and_ready_frames_match_the_document(
    service: Client, footage: Footage
) -> None:
    """archive_progress then archive_generated (ok), each as the document describes it."""
    doc, _answer, pusher, channel, response = await _ask_subscribed(service, footage)
    assert response.status == 202
    kinds = [_check(doc, frame, channel) for frame in await _frames(pusher, 2)]
    assert kinds == ["archive_progress", "archive_generated"]
    await pusher.ws.close()


async def test_a_failed_archive_frame_matches_the_document(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """The error variant (status error, message, url null) is described as well."""
    bad_camera.mode = "notfound"
    doc, answer, pusher, channel, response = await _ask_subscribed(service, footage)
    download = (await response.json())["download"]
    frames = await _frames(pusher, 2)
    assert [_check(doc, frame, channel) for frame in frames] == [
        "archive_progress",
        "archive_generated",
    ]
    failed = json.loads(frames[1]["data"])
    assert failed["status"] == "error" and failed["message"]
    assert failed["data"]["download"]["url"] is None
    await wait_status(service, answer, download["id"], {"failed"}, device=PHONE)
    await pusher.ws.close()
