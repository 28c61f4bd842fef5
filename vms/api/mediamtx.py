"""MediaMTX's external authentication hook (`authMethod: http`) answered by the VMS."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from vms import appkeys, jsontext
from vms.api.errors import ApiError
from vms.auth import Unauthenticated
from vms.dates import parse_rfc3339
from vms.mediaserver.auth import AuthError, authorize, check_range
from vms.mediaserver.params import parse_playback_duration

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_MAX_TOKEN = 8192


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    return value if isinstance(value, str) else ""


def _candidates(body: dict[str, Any], query: dict[str, list[str]]) -> list[str]:
    """Where MediaMTX may have put the token: its own fields, then the client's query."""
    found = [_text(body, "token"), _text(body, "password")]
    for name in ("token", "jwt"):
        found.extend(query.get(name, [])[:1])
    return [token for token in found if token and len(token) <= _MAX_TOKEN]


def _requested_range(query: dict[str, list[str]]) -> tuple[datetime | None, datetime | None]:
    """The time a playback request covers: /get's start+duration or /list's start and end."""

    def one(name: str) -> str | None:
        values = query.get(name, [])
        return values[0] if len(values) == 1 else None

    raw_start = one("start")
    start = parse_rfc3339(raw_start, exact_case=True) if raw_start is not None else None
    raw_duration, raw_end = one("duration"), one("end")
    if start is not None and raw_duration is not None:
        seconds = parse_playback_duration(raw_duration)
        if seconds is None or not 0 < seconds <= 365 * 86400:
            return start, None
        return start, start + timedelta(seconds=seconds)
    return start, parse_rfc3339(raw_end, exact_case=True) if raw_end is not None else None


async def mediamtx_auth(request: web.Request) -> web.Response:
    """POST /api/v1/mediamtx/auth: 200 when a media token in the request grants it, else 401."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413)
    try:
        body = jsontext.loads(raw)
    except ValueError:
        raise Unauthenticated from None
    if not isinstance(body, dict):
        raise Unauthenticated
    action, path = _text(body, "action"), _text(body, "path")
    query = parse_qs(_text(body, "query")[:MAX_BODY], keep_blank_values=True)
    media_keys = request.config_dict[appkeys.MEDIA_KEYS]
    reasons = []
    for token in _candidates(body, query):
        try:
            claims = await authorize(token, media_keys, path, action)
            if action == "playback":
                check_range(claims, *_requested_range(query))
        except AuthError as exc:
            reasons.append(str(exc))
            continue
        return web.json_response({"status": "ok"})
    log.info(
        "media server auth refused %s on %r for %s: %s",
        action or "no action",
        path[:200],
        _text(body, "ip")[:64] or "unknown address",
        "; ".join(reasons) or "no token",
    )
    raise Unauthenticated
