"""Where to connect for pushes, and private-channel authorisation for the socket."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aiohttp import web

from vms import keys
from vms.api.errors import ApiError
from vms.api.sessions import authenticated, read_body
from vms.auth import Throttle
from vms.push.signing import sign_channel
from vms.validation import DEVICE_HEADERS, ValidationFailed, header_values

# ASCII digits and fullmatch: Python's \d takes "١" and its $ a trailing newline, Pusher's neither.
_SOCKET_ID = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")


def wsurl_throttle() -> Throttle:
    """20 requests in 5 minutes per device, as the contract allows."""
    return Throttle(20, 300.0)


async def wsurl(request: web.Request) -> web.Response:
    """GET /api/v1/wsurl: the WebSocket address and app key for Pusher clients."""
    device = DEVICE_HEADERS.validated(header_values(request))["device"]
    throttle = request.app[keys.WSURL_THROTTLE]
    retry_after = throttle.retry_after(device)
    if retry_after:
        raise ApiError(429, retry_after=retry_after)
    throttle.hit(device)
    base = urlsplit(request.app[keys.CONFIG].base_url)
    secure = base.scheme == "https"
    host = base.hostname or "127.0.0.1"
    port = base.port or (443 if secure else 80)
    scheme = "wss" if secure else "ws"
    return web.json_response(
        {
            "ws_url": f"{scheme}://{host}:{port}/ws",
            "app_key": request.app[keys.KEYSTORE].app_key,
            "port": port,
            "host": host,
            "path": "/ws",
            "is_encrypted": secure,
        }
    )


def allowed_channels(user_id: int, session_id: str) -> tuple[str, ...]:
    """The private channels one device session may listen on."""
    return (f"private-token.{session_id}", f"private-user.{user_id}")


async def broadcasting_auth(request: web.Request) -> web.Response:
    """POST /broadcasting/auth: sign a socket's subscription to one of the caller's channels."""
    # Stock pusher-js and Echo set only the headers an app gives them: no device headers here.
    principal = await authenticated(request, device_headers=False)
    body = await read_body(request)
    socket_id, channel = body.get("socket_id"), body.get("channel_name")
    errors: dict[str, list[str]] = {}
    if not isinstance(socket_id, str) or not socket_id:
        errors["socket_id"] = ["The socket id field is required."]
    elif not _SOCKET_ID.fullmatch(socket_id):
        errors["socket_id"] = ["The socket id field format is invalid."]
    if not isinstance(channel, str) or not channel:
        errors["channel_name"] = ["The channel name field is required."]
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(socket_id, str) and isinstance(channel, str)
    if channel not in allowed_channels(principal.user.id, principal.session.id):
        raise ApiError(403)
    keystore = request.app[keys.KEYSTORE]
    request.app[keys.HUB].bind_session(socket_id, principal.session.id)
    return web.json_response(
        {"auth": sign_channel(keystore.app_key, keystore.app_secret, socket_id, channel)}
    )
