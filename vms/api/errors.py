"""The one error shape of the JSON surfaces (Laravel JSON) and the middleware that maps to it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from vms.archive.actions import DownloadNotFound, NotAllowed
from vms.archive.fetcher import LOW_DISK_MESSAGE
from vms.archive.mediaclient import MediaUnavailable
from vms.archive.requests import NotEnoughDisk, TooManyPending
from vms.auth import Unauthenticated
from vms.logs import log_unexpected
from vms.validation import ValidationFailed, error_body

log = logging.getLogger(__name__)

_REASONS = {
    400: "Bad Request.",
    401: "Unauthenticated.",
    403: "This action is unauthorized.",
    404: "Not Found.",
    405: "Method Not Allowed.",
    413: "Request Entity Too Large.",
    429: "Too Many Attempts.",
    500: "Server Error.",
    502: "Bad Gateway.",
    503: "Service Unavailable.",
    507: "Insufficient Storage.",
}


def json_error(
    status: int, message: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A Laravel-style `{"message": ...}` error response."""
    return web.json_response(
        {"message": message or _REASONS.get(status, "Error.")}, status=status, headers=headers
    )


def too_many(retry_after: int) -> web.Response:
    """429 with Retry-After, as Laravel's throttle answers."""
    return json_error(429, "Too Many Attempts.", {"Retry-After": str(retry_after)})


class ApiError(Exception):
    """A handler's way to stop with a JSON error."""

    def __init__(self, status: int, message: str | None = None, retry_after: int | None = None):
        super().__init__(message or _REASONS.get(status, "Error."))
        self.status = status
        self.message = message
        self.retry_after = retry_after


# The use cases' refusals that read the same wherever they come from: one map, one place.
# (CameraNotFound, NoRecording and InvalidCameras differ by endpoint and stay in handlers.)
_DOMAIN: tuple[tuple[type[Exception], int, str | None], ...] = (
    (MediaUnavailable, 502, "The camera's media server is unavailable."),
    (TooManyPending, 429, None),
    (NotEnoughDisk, 507, LOW_DISK_MESSAGE),
    (DownloadNotFound, 404, "Download not found."),
    (NotAllowed, 403, None),
)
# A queued archive takes tens of seconds; asking again sooner is pointless.
PENDING_RETRY_AFTER = 30


def _domain_error(exc: Exception) -> web.Response | None:
    for kind, status, message in _DOMAIN:
        if isinstance(exc, kind):
            return too_many(PENDING_RETRY_AFTER) if status == 429 else json_error(status, message)
    return None


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure of a JSON surface into Laravel's shape, never a stack trace."""
    try:
        return await handler(request)
    except Unauthenticated:
        return json_error(401)
    except ValidationFailed as exc:
        return web.json_response(error_body(exc.errors), status=422)
    except ApiError as exc:
        if exc.retry_after is not None:
            return too_many(exc.retry_after)
        return json_error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(
            exc.status, None, {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        )
    except Exception as exc:  # a known refusal, or the last line of defence
        known = _domain_error(exc)
        if known is not None:
            return known
        log_unexpected(log, f"{request.method} {request.path}", exc)
        return json_error(500)
