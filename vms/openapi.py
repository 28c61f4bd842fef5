"""The OpenAPI 3.1 description of the HTTP API, served at /api/openapi.json.

One cohesive thing: a single document, its path entries in the order of the routes; it is
long because the contract is, and kept true by tests/test_openapi.py and schemathesis.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vms.models import CLIENTS

_STAMP = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"}
_LOCAL = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"}

# A request date as vms.dates.parse_date accepts it. Calendar rules are spelled out (leap days,
# month lengths, no year 0000) so that a value matching the pattern is a date the code takes;
# only an offset carrying an instant of year 1 or 9999 out of datetime's range is refused beyond it.
# [0-9] rather than \d throughout: Python tools read \d as any Unicode digit.
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    "|(?:0[13-9]|1[0-2])-(?:29|30)"
    "|(?:0[13578]|1[02])-31)"
)
_DAY = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_REQUEST_DATE: dict[str, Any] = {
    "type": "string",
    "maxLength": 35,  # 2026-11-23T10:20:00.123456789+03:00
    "pattern": f"^(?:{_DAY}[Tt]{_TIME}(?:\\.[0-9]{{1,9}})?{_OFFSET}|{_DAY} {_TIME})$",
}
# A record id in a URL, as vms.validation.parse_id reads it.
_RECORD_ID = {"type": "string", "pattern": "^[0-9]{1,12}$"}
_DATE_FORMATS = "RFC 3339 (fraction optional) or `YYYY-MM-DD HH:MM:SS` in the server's time zone."


_CAMERA_IDS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": 50,
    "uniqueItems": True,
    "items": {"type": "integer", "minimum": 1},
    "description": "Camera ids (as `ids[]` in a form).",
}


def _queued(description: str) -> dict[str, Any]:
    """202 `{"status": "queued", "download": DOWNLOAD}`."""
    return _json(
        {
            "type": "object",
            "required": ["status", "download"],
            "additionalProperties": False,
            "properties": {"status": {"const": "queued"}, "download": _ref("Download")},
        },
        description,
    )


def _download_id() -> dict[str, Any]:
    """The `{id}` of a download in a path: anything but digits names none (404)."""
    return {"name": "id", "in": "path", "required": True, "schema": _RECORD_ID}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _string_fields_body(**fields: dict[str, Any]) -> dict[str, Any]:
    """A required body of string fields (name: its constraints), as JSON or as a form."""
    schema = {
        "type": "object",
        "required": list(fields),
        "properties": {name: {"type": "string", **rules} for name, rules in fields.items()},
    }
    return {
        "required": True,
        "content": {
            media: {"schema": schema}
            for media in ("application/json", "application/x-www-form-urlencoded")
        },
    }


def _optional_query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter; an empty value counts as absent, as in Laravel."""
    return {
        "name": name,
        "in": "query",
        "schema": schema,
        # Laravel's ConvertEmptyStringsToNull makes `per_page=` null, which `nullable` skips.
        "allowEmptyValue": True,
        "description": f"{description} Empty (or only white space) counts as absent.",
    }


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Message"), description)


_DEVICE_HEADERS = [
    {
        "name": "X-Client",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": list(CLIENTS)},
        "description": "Which app asks; `thick-legal` gets a direct link, others a server archive.",
    },
    {
        "name": "X-UUID",
        "in": "header",
        "required": True,
        # No space at either end: HTTP drops it, so the server never sees one there.
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$",
        },
        "description": "The device id (printable ASCII); must match the token's session.",
    },
]

_SCHEMAS: dict[str, Any] = {
    "Message": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}},
    },
    "ValidationError": {
        "type": "object",
        "required": ["message", "errors"],
        "properties": {
            "message": {"type": "string"},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "User": {
        "type": "object",
        "required": ["id", "login", "name", "created_at", "updated_at", "access_token_id"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "login": {"type": "string"},
            "name": {"type": "string"},
            "created_at": _STAMP,
            "updated_at": _STAMP,
            "access_token_id": {"type": "string", "pattern": "^[0-9a-f]{80}$"},
        },
    },
    "Download": {
        "type": "object",
        "required": [
            "id",
            "name",
            "type",
            "url",
            "from",
            "to",
            "created_at",
            "updated_at",
            "is_file_exists",
            "user_id",
            "camera_id",
            "status",
            "kind",
            "progress",
            "message",
            "size",
            "duration",
            "expires_at",
            "sha256",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "description": "Camera and range, e.g. `Gate, ...mp4`."},
            "type": {"const": "mp4"},
            "url": {
                "type": ["string", "null"],
                "description": "Signed download URL of a ready archive, or the media server "
                "link of a history record; null otherwise.",
            },
            "from": _LOCAL,
            "to": _LOCAL,
            "created_at": _STAMP,
            "updated_at": _STAMP,
            "is_file_exists": {
                "type": "boolean",
                "description": "True while the server holds the archive file.",
            },
            "user_id": {"type": "integer"},
            "camera_id": {"type": "integer"},
            "status": {
                "enum": ["queued", "in progress", "ready", "failed", "cancelled", "expired"],
                "description": "A ready archive whose file is gone reads `expired`.",
            },
            "kind": {
                "enum": ["link", "archive"],
                "description": "`link`: a thick-client history record; `archive`: a file the "
                "server makes.",
            },
            "progress": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 100,
                "description": "Percent fetched; 100 once ready; null for links.",
            },
            "message": {
                "type": ["string", "null"],
                "description": "Why it failed or was cancelled; null otherwise.",
            },
            "size": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "Bytes of the file; null until ready.",
            },
            "duration": {
                "type": ["number", "null"],
                "minimum": 0,
                "description": "Seconds of footage actually in the file; null until ready.",
            },
            "expires_at": {
                "anyOf": [_STAMP, {"type": "null"}],
                "description": "When the file is deleted; null for links and until ready.",
            },
            "sha256": {
                "type": ["string", "null"],
                "pattern": "^[0-9a-f]{64}$",
                "description": "Hex SHA-256 of the file, computed while it was written.",
            },
        },
    },
    "DownloadList": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Download"}}
        },
    },
    "DownloadPage": {
        "type": "object",
        "required": ["data", "links", "meta"],
        "properties": {
            "data": {"type": "array", "items": _ref("Download")},
            "links": {
                "type": "object",
                "required": ["first", "last", "prev", "next"],
                "properties": {
                    k: {"type": ["string", "null"]} for k in ("first", "last", "prev", "next")
                },
            },
            "meta": {
                "type": "object",
                "required": [
                    "current_page",
                    "from",
                    "last_page",
                    "path",
                    "per_page",
                    "to",
                    "total",
                ],
                "properties": {
                    "current_page": {"type": "integer", "minimum": 1},
                    "from": {"type": ["integer", "null"]},
                    "last_page": {"type": "integer", "minimum": 1},
                    "path": {"type": "string"},
                    "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
                    "to": {"type": ["integer", "null"]},
                    "total": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _paths() -> dict[str, Any]:
    unauthenticated = _error("No acceptable access token.")
    invalid = _json(_ref("ValidationError"), "Invalid input (Laravel 422 shape).")
    return {
        "/api/v1/token": {
            "post": {
                "summary": "Log in: open a device session and get an access token.",
                "parameters": _DEVICE_HEADERS,
                "requestBody": _string_fields_body(
                    login={"minLength": 1, "maxLength": 255},
                    password={"minLength": 1, "maxLength": 1024},
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["user", "access_token"],
                            "additionalProperties": False,
                            "properties": {
                                "user": _ref("User"),
                                "access_token": {"type": "string"},
                            },
                        },
                        "Logged in.",
                    ),
                    "422": invalid,
                    "429": _error("Too many failed attempts; see Retry-After."),
                },
            }
        },
        "/api/v1/sessions/{access_token_id}": {
            "post": {
                "summary": "End one of the caller's own sessions; its sockets close.",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "access_token_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    *_DEVICE_HEADERS,
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "Ended.",
                    ),
                    "401": unauthenticated,
                    "404": _error("Not one of the caller's open sessions."),
                    "422": invalid,
                },
            }
        },
        "/api/v1/cameras/{camera}/archive/link": {
            "get": {
                "summary": "A link to a camera's archive for a time range.",
                "description": "`thick-legal` gets the media server's own URL at once (200) and "
                "a history record; other clients get a server-side archive (202) announced "
                "over the push channel when ready.",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "camera",
                        "in": "path",
                        "required": True,
                        # Anything else names no camera: 404, as for one the caller may not see.
                        "schema": _RECORD_ID,
                    },
                    {
                        "name": "from",
                        "in": "query",
                        "required": True,
                        "schema": _REQUEST_DATE,
                        "description": f"{_DATE_FORMATS} Not in the future.",
                    },
                    {
                        "name": "to",
                        "in": "query",
                        "required": True,
                        "schema": _REQUEST_DATE,
                        "description": f"{_DATE_FORMATS} After `from`, within the maximum range.",
                    },
                    *_DEVICE_HEADERS,
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["link"],
                            "additionalProperties": False,
                            "properties": {"link": {"type": "string", "format": "uri"}},
                        },
                        "Direct link (thick-legal).",
                    ),
                    "202": _queued("Archive queued or already underway (other clients)."),
                    "401": unauthenticated,
                    "404": _error("No such camera, or not the caller's."),
                    "422": invalid,
                    "429": _error("Too many archives queued or running for this device."),
                    "502": _error("The camera's media server is unavailable."),
                    "507": _error("Not enough disk space for new archives."),
                },
            }
        },
        "/api/v1/downloads": {
            "get": {
                "summary": "The caller's history records, newest first.",
                "security": _BEARER,
                "parameters": [
                    _optional_query(
                        "page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "From 1."
                    ),
                    _optional_query(
                        "per_page", {"type": "integer", "minimum": 1, "maximum": 100}, "Default 25."
                    ),
                    _optional_query("from", _REQUEST_DATE, f"Created at or after. {_DATE_FORMATS}"),
                    _optional_query("to", _REQUEST_DATE, f"Created at or before. {_DATE_FORMATS}"),
                    _optional_query(
                        "kind",
                        {"enum": ["link", "archive", "all"]},
                        "`link` (default): history records; `archive`: server-side archives; "
                        "`all`: both.",
                    ),
                    *_DEVICE_HEADERS,
                ],
                "responses": {
                    "200": _json(_ref("DownloadPage"), "One page."),
                    "401": unauthenticated,
                    "422": invalid,
                },
            },
            "post": {
                "summary": "One range of several cameras (up to 50), all or nothing.",
                "description": "Validated as a whole: `ids.N` names a camera that is unknown, "
                "not the caller's or without recording. Nothing is made unless all are valid "
                "and the device's cap leaves room for all (429).",
                "security": _BEARER,
                "parameters": _DEVICE_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        media: {
                            "schema": {
                                "type": "object",
                                "required": ["from", "to"],
                                "properties": {
                                    "from": _REQUEST_DATE,
                                    "to": _REQUEST_DATE,
                                    "ids": _CAMERA_IDS,
                                    "ids[]": _CAMERA_IDS,
                                },
                            }
                        }
                        for media in ("application/json", "application/x-www-form-urlencoded")
                    },
                },
                "responses": {
                    "200": _json(_ref("DownloadList"), "History records with links (thick-legal)."),
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["status", "data"],
                            "additionalProperties": False,
                            "properties": {
                                "status": {"const": "queued"},
                                "data": {"type": "array", "items": _ref("Download")},
                            },
                        },
                        "Archives queued or already underway (other clients).",
                    ),
                    "401": unauthenticated,
                    "422": invalid,
                    "429": _error("The device's cap has no room for all of them."),
                    "502": _error("A camera's media server is unavailable."),
                    "507": _error("Not enough disk space for new archives."),
                },
            },
        },
        "/api/v1/cameras": {
            "get": {
                "summary": "The cameras the caller may see, by id.",
                "security": _BEARER,
                "parameters": _DEVICE_HEADERS,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["data"],
                            "additionalProperties": False,
                            "properties": {
                                "data": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["id", "name"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "id": {"type": "integer"},
                                            "name": {"type": "string"},
                                        },
                                    },
                                }
                            },
                        },
                        "Cameras.",
                    ),
                    "401": unauthenticated,
                    "422": invalid,
                },
            }
        },
        "/api/admin/v1/downloads/{id}/repeat": {
            "post": {
                "summary": "A new archive of the same camera and range (operators only).",
                "description": "For the same user and device session as the original, and "
                "pushed to that device.",
                "security": _BEARER,
                "parameters": [_download_id(), *_DEVICE_HEADERS],
                "responses": {
                    "202": _queued("Queued."),
                    "401": unauthenticated,
                    "403": _error("Not an operator, or the original is a history record."),
                    "404": _error("No such download."),
                    "422": invalid,
                },
            }
        },
        "/api/v1/downloads/{id}/manifest": {
            "get": {
                "summary": "The signed manifest of a ready archive (a compact JWS).",
                "description": "`alg` EdDSA, `typ` vms-archive-manifest+jwt, `kid` of a key in "
                "/.well-known/jwks.json. The payload says which camera and range the file "
                "holds, the recorded `spans` in it and the `gaps` (measured while it was "
                "written), its `size` and `sha256`, who asked for it and from which media "
                "server. The caller's own, or anyone's for an operator. Check a file "
                "against it offline with `python server.py verify FILE MANIFEST --jwks FILE`.",
                "security": _BEARER,
                "parameters": [_download_id(), *_DEVICE_HEADERS],
                "responses": {
                    "200": {
                        "description": "The manifest.",
                        "content": {
                            "application/vms-archive-manifest+jwt": {
                                "schema": {
                                    "type": "string",
                                    "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                                }
                            }
                        },
                    },
                    "401": unauthenticated,
                    "404": _error(
                        "Not the caller's, no such download, or one that never became a file."
                    ),
                    "409": _error("The archive is still being made: no digest yet."),
                    "410": _error("The archive's file has been deleted or has expired."),
                    "422": invalid,
                },
            }
        },
        "/api/v1/downloads/{id}": {
            "get": {
                "summary": "One of the caller's downloads: history record or server archive.",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        # Anything else names no download: 404, as for someone else's.
                        "schema": _RECORD_ID,
                    },
                    *_DEVICE_HEADERS,
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["data"],
                            "properties": {"data": _ref("Download")},
                        },
                        "The download.",
                    ),
                    "401": unauthenticated,
                    "404": _error("Not the caller's, or no such download."),
                    "422": invalid,
                },
            },
            "delete": {
                "summary": "Cancel a queued or running archive, or delete a ready one's file.",
                "description": "A cancelled archive reads `cancelled` (its work stops within "
                "1 s, its partial file is removed, the device is pushed `archive_generated` "
                "with `status` error); a deleted one reads `expired` and its link answers 410. "
                "Operators may act on anyone's.",
                "security": _BEARER,
                "parameters": [_download_id(), *_DEVICE_HEADERS],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["data"],
                            "properties": {"data": _ref("Download")},
                        },
                        "The download as it now is.",
                    ),
                    "401": unauthenticated,
                    "403": _error("A history record is kept."),
                    "404": _error("Not the caller's, or no such download."),
                    "422": invalid,
                },
            },
        },
        "/api/v1/wsurl": {
            "get": {
                "summary": "Where Pusher clients connect (protocol 7).",
                "parameters": _DEVICE_HEADERS,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": [
                                "ws_url",
                                "app_key",
                                "port",
                                "host",
                                "path",
                                "is_encrypted",
                            ],
                            "additionalProperties": False,
                            "properties": {
                                "ws_url": {"type": "string"},
                                "app_key": {"type": "string"},
                                "port": {"type": "integer"},
                                "host": {"type": "string"},
                                "path": {"const": "/ws"},
                                "is_encrypted": {"type": "boolean"},
                            },
                        },
                        "Connection settings.",
                    ),
                    "422": invalid,
                    "429": _error("More than 20 requests in 5 minutes from this device."),
                },
            }
        },
        "/api/v1/broadcasting/auth": {
            "post": {
                "summary": "Authorise a socket's subscription to one of the caller's channels.",
                "description": "Also served at `/broadcasting/auth`.",
                "security": _BEARER,
                "requestBody": _string_fields_body(
                    socket_id={"pattern": r"^[0-9]{1,20}\.[0-9]{1,20}$"},
                    channel_name={"minLength": 1},
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["auth"],
                            "properties": {"auth": {"type": "string"}},
                        },
                        "`APP_KEY:HMAC`.",
                    ),
                    "401": unauthenticated,
                    "403": _error("Not the caller's channel."),
                    "422": invalid,
                },
            }
        },
        "/api/v1/mediamtx/auth": {
            "post": {
                "summary": "MediaMTX's external authentication (`authMethod: http`).",
                "description": "Answers 200 when a media token in `token`, `password`, or the "
                "`token`/`jwt` parameter of `query` verifies and grants `action` on `path` "
                "for the time the query asks for. Reads no device headers.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    **{
                                        name: {"type": "string"}
                                        for name in (
                                            "ip",
                                            "user",
                                            "password",
                                            "token",
                                            "action",
                                            "path",
                                            "protocol",
                                            "query",
                                            "userAgent",
                                        )
                                    },
                                    "id": {"type": ["string", "null"]},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "Allowed.",
                    ),
                    "401": unauthenticated,
                    "413": _error("The body is over 64 KiB."),
                },
            }
        },
    }


def _operations() -> dict[str, Any]:
    """The probes and the metrics page, on the service's root (for operators and monitors)."""
    check = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    readiness = {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "checks": {"type": "object", "additionalProperties": check},
        },
    }
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness: 200 while the process answers.",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "Alive.",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: database, archive disk space, shutting down.",
                "responses": {
                    "200": _json(readiness, "Ready for work."),
                    "503": _json(readiness, "Not ready; the failing checks say why."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: to loopback clients and operator tokens.",
                "security": [{}, *_BEARER],
                "responses": {
                    "200": {
                        "description": "Prometheus text format (or OpenMetrics on request).",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "403": _error("Neither loopback nor an operator's token."),
                },
            }
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VMS archive service",
            "version": "1.0.0",
            "description": "Archive links and server-side archives for VMS clients. "
            "Errors use Laravel's JSON shapes.",
        },
        "paths": {**_paths(), **_operations()},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/openapi.json."""
    return web.json_response(document())


# The DOWNLOAD schema, shared with the AsyncAPI document of the push events.
DOWNLOAD_SCHEMA: dict[str, Any] = _SCHEMAS["Download"]
