"""Reading a request's input for the JSON surfaces: the caller, bodies, query values, ids.

Authentication comes first, as the contract says: a bad token is 401 whatever else is wrong.
Everything here only reads; rules about what the values mean live in `vms.validation`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from vms import appkeys, jsontext
from vms.api.errors import ApiError
from vms.auth import Principal, Unauthenticated
from vms.validation import DEVICE_HEADERS

DEVICE_HEADER_NAMES = ("X-Client", "X-UUID")


async def read_body(request: web.Request) -> dict[str, Any]:
    """Fields of a JSON or form body; a body that cannot be read counts as empty.

    JSON nested deeper than any real body is refused before it is parsed (400).
    """
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


def query_values(request: web.Request, names: tuple[str, ...]) -> dict[str, Any]:
    """Named query parameters; a repeated one comes back as a list so it fails validation."""
    return _values(request.query, names)


def header_values(request: web.Request) -> dict[str, Any]:
    """The device headers, as validation input."""
    return _values(request.headers, DEVICE_HEADER_NAMES)


def _values(source: Any, names: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names:
        found = source.getall(name, [])
        if len(found) == 1:
            values[name] = found[0]
        elif found:
            values[name] = found
    return values


def parse_id(text: str) -> int | None:
    """A record id from a URL segment: plain ASCII digits only (no `１`, signs or spaces)."""
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


async def authenticated(request: web.Request, *, device_headers: bool = True) -> Principal:
    """The caller behind the bearer token (401 otherwise), then its device headers (422).

    Handlers that validate the headers together with other input pass False.
    """
    devices = request.headers.getall("X-UUID", [])
    if len(devices) > 1:  # two device ids could otherwise dodge the device check
        raise Unauthenticated
    principal = await request.config_dict[appkeys.AUTH].authenticate(
        request.headers.get("Authorization"), devices[0] if devices else None
    )
    if device_headers:
        DEVICE_HEADERS.validated(header_values(request))
    return principal
