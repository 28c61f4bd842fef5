"""The AsyncAPI 3.0 description of the push events, served at /api/asyncapi.json.

What a device receives over the Pusher socket about its archives: the channel, the event name
and the two payloads. The DOWNLOAD inside them is the OpenAPI document's own schema, so the
two documents cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vms.archive import events
from vms.openapi import DOWNLOAD_SCHEMA


def _envelope(kind: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["type", "status", "data", "subject", "message"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": kind},
            "status": {"enum": ["ok", "error"]},
            "data": data,
            "subject": {"type": "null"},
            "message": {"type": ["string", "null"]},
        },
    }


_GENERATED = _envelope(
    "archive_generated",
    {
        "type": "object",
        "required": ["download"],
        "additionalProperties": False,
        "properties": {"download": {"$ref": "#/components/schemas/Download"}},
    },
    "The archive is ready (`status` ok, `download.url` set) or could not be made or was "
    "cancelled (`status` error, `message` says why, `url` null). Sent when it happens, again "
    "when the same device asks for the same archive while it is ready, and replayed for "
    "archives still on disk when the device subscribes.",
)
_PROGRESS = _envelope(
    "archive_progress",
    {
        "type": "object",
        "required": ["download", "progress"],
        "additionalProperties": False,
        "properties": {
            "download": {"$ref": "#/components/schemas/Download"},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        },
    },
    "How far the fetch has come: 0 when it starts, then at most once a second.",
)


def document() -> dict[str, Any]:
    """The whole AsyncAPI document."""
    message = {"name": events.EVENT, "contentType": "application/json"}
    generated = {**message, "title": "archive_generated", "payload": _GENERATED}
    progress = {**message, "title": "archive_progress", "payload": _PROGRESS}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "VMS archive service push",
            "version": "1.0.0",
            "description": "Pusher Channels protocol 7 (5 and 6 accepted). Connect to "
            "`/ws/app/{app_key}` (or `/app/{app_key}`) with the values of "
            "`GET /api/v1/wsurl`, authorise a private channel at `POST /broadcasting/auth`, "
            "subscribe, and bind the event `App\\Events\\TokenPush`. On the wire each frame "
            'is `{"event", "channel", "data"}` with `data` a JSON string; the payloads '
            "below are that string decoded.",
        },
        "servers": {
            "service": {
                "host": "{host}",
                "protocol": "ws",
                "pathname": "/ws/app/{app_key}",
                "description": "The service's own port; `wss` when it serves TLS.",
                "variables": {
                    "host": {"description": "`host:port` from GET /api/v1/wsurl."},
                    "app_key": {"description": "`app_key` from GET /api/v1/wsurl."},
                },
            }
        },
        "channels": {
            "token": {
                "address": "private-token.{access_token_id}",
                "description": "The device session's channel: its archives' events only.",
                "parameters": {
                    "access_token_id": {"description": "`user.access_token_id` of the login."}
                },
                "messages": {
                    "archiveGenerated": {"$ref": "#/components/messages/archiveGenerated"},
                    "archiveProgress": {"$ref": "#/components/messages/archiveProgress"},
                },
            }
        },
        "operations": {
            "receiveArchiveEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/token"},
                "messages": [
                    {"$ref": "#/channels/token/messages/archiveGenerated"},
                    {"$ref": "#/channels/token/messages/archiveProgress"},
                ],
            }
        },
        "components": {
            "messages": {
                "archiveGenerated": generated,
                "archiveProgress": progress,
            },
            "schemas": {"Download": DOWNLOAD_SCHEMA},
        },
    }


async def asyncapi_json(request: web.Request) -> web.Response:
    """GET /api/asyncapi.json."""
    return web.json_response(document())
