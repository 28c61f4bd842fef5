"""Where to connect for pushes, and private-channel authorisation for the socket."""

from __future__ import annotations

from aiohttp import web

from vms import appkeys
from vms.api.errors import ApiError
from vms.api.inputs import authenticated, header_values, read_body
from vms.archive import events
from vms.push.signing import sign_channel
from vms.throttle import Throttle, ThrottleFactory, local_throttle
from vms.validation import DEVICE_HEADERS, BroadcastAuthSchema

_broadcast_schema = BroadcastAuthSchema()


def wsurl_throttle(make: ThrottleFactory = local_throttle) -> Throttle:
    """20 requests in 5 minutes per device, as the contract allows."""
    return make("wsurl", 20, 300.0)


async def wsurl(request: web.Request) -> web.Response:
    """GET /api/v1/wsurl: the WebSocket address and app key for Pusher clients."""
    app = request.config_dict
    device = DEVICE_HEADERS.validated(header_values(request))["device"]
    throttle = app[appkeys.WSURL_THROTTLE]
    retry_after = await throttle.take(device)
    if retry_after:
        raise ApiError(429, retry_after=retry_after)
    socket = app[appkeys.URLS].socket()
    return web.json_response(
        {
            "ws_url": socket.url,
            "app_key": app[appkeys.KEYSTORE].app_key,
            "port": socket.port,
            "host": socket.host,
            "path": socket.path,
            "is_encrypted": socket.secure,
        }
    )


async def broadcasting_auth(request: web.Request) -> web.Response:
    """POST /broadcasting/auth: sign a socket's subscription to one of the caller's channels."""
    app = request.config_dict
    # Stock pusher-js and Echo set only the headers an app gives them: no device headers here.
    principal = await authenticated(request, device_headers=False)
    body = await read_body(request)
    data = _broadcast_schema.validated(
        {"socket_id": body.get("socket_id"), "channel_name": body.get("channel_name")}
    )
    socket_id, channel = data["socket_id"], data["channel_name"]
    if channel not in events.channels_for(principal.user.id, principal.session.id):
        raise ApiError(403)
    keystore = app[appkeys.KEYSTORE]
    app[appkeys.HUB].bind_session(socket_id, principal.session.id)
    return web.json_response(
        {"auth": sign_channel(keystore.app_key, keystore.app_secret, socket_id, channel)}
    )
