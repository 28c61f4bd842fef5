"""Login, ending a session, and the public keys tokens are checked with."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from vms import jsontext, keys
from vms.api.errors import ApiError
from vms.auth import InvalidCredentials, Principal, Unauthenticated
from vms.dates import utcnow
from vms.resources import user_resource
from vms.validation import DEVICE_HEADERS, LoginSchema, ValidationFailed, header_values

_CREDENTIALS = "These credentials do not match our records."
_login_schema = LoginSchema()


async def read_body(request: web.Request) -> dict[str, Any]:
    """Fields of a JSON or form body; a body that cannot be read counts as empty."""
    if not request.can_read_body:
        return {}
    try:
        if request.content_type == "application/json":
            body = jsontext.loads(await request.read())
            return body if isinstance(body, dict) else {}
        if request.content_type == "application/x-www-form-urlencoded":
            # Parsed by hand: aiohttp's post() ignores the body of a GET, and the archive
            # link accepts from/to in a form body.
            fields = parse_qs(await request.text(), keep_blank_values=True)
            return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
        if request.content_type == "multipart/form-data" and request.method == "POST":
            form = await request.post()
            return {k: (v if len(form.getall(k)) == 1 else form.getall(k)) for k, v in form.items()}
    except jsontext.TooDeep:
        raise ApiError(400, "The request body is nested too deeply.") from None
    except ValueError:
        return {}
    return {}


async def authenticated(request: web.Request, *, device_headers: bool = True) -> Principal:
    """The caller behind the bearer token (401 otherwise), then its device headers (422).

    Authentication comes first, as the contract says: a bad token is 401 whatever else is
    wrong. Handlers that validate the headers together with other input pass False.
    """
    devices = request.headers.getall("X-UUID", [])
    if len(devices) > 1:  # two device ids could otherwise dodge the device check
        raise Unauthenticated
    principal = await request.app[keys.AUTH].authenticate(
        request.headers.get("Authorization"), devices[0] if devices else None
    )
    if device_headers:
        DEVICE_HEADERS.validated(header_values(request))
    return principal


async def login(request: web.Request) -> web.Response:
    """POST /api/v1/token: check credentials and open a device session."""
    body = await read_body(request)
    data = _login_schema.validated(
        {"login": body.get("login"), "password": body.get("password"), **header_values(request)}
    )
    auth = request.app[keys.AUTH]
    address = request.remote or "unknown"
    retry_after = auth.login_retry_after(data["login"], address)
    if retry_after:
        raise ApiError(429, retry_after=retry_after)
    try:
        user = await auth.check_password(data["login"], data["password"], address)
    except InvalidCredentials:
        raise ValidationFailed({"login": [_CREDENTIALS]}) from None
    issued = await auth.issue(user, data["device"], data["client"], utcnow())
    return web.json_response(
        {
            "user": user_resource(user, issued.principal.session.id),
            "access_token": issued.access_token,
        }
    )


async def end_session(request: web.Request) -> web.Response:
    """POST /api/v1/sessions/{access_token_id}: end one of the caller's own sessions."""
    principal = await authenticated(request)
    session_id = request.match_info["access_token_id"]
    ended = await request.app[keys.AUTH].end_session(principal, session_id, utcnow())
    if not ended:
        raise ApiError(404, "Session not found.")
    for hook in request.app[keys.SESSION_ENDED]:
        await hook(session_id)
    return web.json_response({"status": "ok"})


async def jwks(request: web.Request) -> web.Response:
    """GET /.well-known/jwks.json: the keys media servers verify tokens with."""
    return web.json_response(
        request.app[keys.KEYSTORE].jwks(), headers={"Cache-Control": "public, max-age=300"}
    )
