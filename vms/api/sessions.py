"""Login, ending a session, and the public keys tokens are checked with."""

from __future__ import annotations

from aiohttp import web

from vms import appkeys
from vms.api.errors import ApiError
from vms.api.inputs import authenticated, header_values, read_body
from vms.resources import user_resource
from vms.sessions import CREDENTIALS_MESSAGE, InvalidCredentials, Throttled
from vms.validation import LoginSchema, ValidationFailed

_login_schema = LoginSchema()


async def login(request: web.Request) -> web.Response:
    """POST /api/v1/token: check credentials and open a device session."""
    body = await read_body(request)
    data = _login_schema.validated(
        {"login": body.get("login"), "password": body.get("password"), **header_values(request)}
    )
    try:
        issued = await request.config_dict[appkeys.SESSIONS].log_in(
            data["login"],
            data["password"],
            address=request.remote or "unknown",
            device=data["device"],
            client=data["client"],
        )
    except Throttled as exc:
        raise ApiError(429, retry_after=exc.retry_after) from None
    except InvalidCredentials:
        raise ValidationFailed({"login": [CREDENTIALS_MESSAGE]}) from None
    principal = issued.principal
    return web.json_response(
        {
            "user": user_resource(principal.user, principal.session.id),
            "access_token": issued.access_token,
        }
    )


async def end_session(request: web.Request) -> web.Response:
    """POST /api/v1/sessions/{access_token_id}: end one of the caller's own sessions."""
    principal = await authenticated(request)
    session_id = request.match_info["access_token_id"]
    if not await request.config_dict[appkeys.SESSIONS].end(principal.user, session_id):
        raise ApiError(404, "Session not found.")
    return web.json_response({"status": "ok"})


async def jwks(request: web.Request) -> web.Response:
    """GET /.well-known/jwks.json: the keys media servers verify tokens with."""
    return web.json_response(
        request.config_dict[appkeys.KEYSTORE].jwks(),
        headers={"Cache-Control": "public, max-age=300"},
    )
