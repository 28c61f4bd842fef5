"""The embedded media server: MediaMTX's playback API (`/list`, `/get`) over aiohttp.

Requests are checked in MediaMTX's order: path name, then the JWT, then the other parameters;
errors are `{"status": "error", "error": TEXT}` with MediaMTX's texts. Listing and remuxing
run on the app's own small thread pool; a /get is produced one chunk at a time, so nothing
runs on behalf of a client between chunks and a client that goes away stops the work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

from vms.mediaserver.auth import AuthError, KeySource, authorize, check_range, token_from
from vms.mediaserver.recordings import (
    InfoCache,
    NoSegmentsFound,
    SegmentError,
    find_segments,
    list_spans,
    path_name_error,
)
from vms.mediaserver.remux import Archive, Cancelled, open_archive

log = logging.getLogger(__name__)

# Longest /get served: an mp4's index grows with its length, so the length is bounded.
MAX_DURATION = 24 * 3600.0
WORKERS = 4

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z"
)
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_GO_DURATION = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+\Z")
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_JWT_IN_TEXT = re.compile(r"((?:^|[?&\s])jwt=)[^&\s\"]+")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class RedactTokens(logging.Filter):
    """Blanks `jwt=` values in log lines: aiohttp's access log writes whole query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record without the token; never drop it."""
        message = record.getMessage()
        if "jwt=" in message:
            record.msg = _JWT_IN_TEXT.sub(r"\1[redacted]", message)
            record.args = ()
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())


@dataclass
class MediaServer:
    """State of one media server app."""

    recordings: Path
    keys: KeySource
    public_url: str | None
    cache: InfoCache = field(default_factory=InfoCache)
    pool: ThreadPoolExecutor | None = None


MEDIA_SERVER = web.AppKey("media_server", MediaServer)


class BadRequest(Exception):
    """A parameter is wrong; the message is MediaMTX's error text."""


def error_response(status: int, text: str) -> web.Response:
    """MediaMTX's error shape."""
    return web.json_response({"status": "error", "error": text}, status=status)


def parse_rfc3339(raw: str) -> datetime | None:
    """An aware UTC datetime from RFC 3339 as Go's time.RFC3339 reads it; None if invalid."""
    match = _RFC3339.match(raw)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micro = int((match.group(7) or ".")[1:].ljust(6, "0")[:6])
    zone = match.group(8)
    try:
        if zone == "Z":
            tz: timezone = UTC
        else:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                return None
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def format_rfc3339(moment: datetime) -> str:
    """Go's RFC3339Nano in UTC: the fraction without trailing zeros."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_duration(raw: str) -> float | None:
    """Seconds from a float (MediaMTX's form) or a Go duration such as `1h30m`; None if invalid."""
    if _FLOAT.match(raw):
        return float(raw)
    if _GO_DURATION.match(raw):
        seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(raw))
        return -seconds if raw.startswith("-") else seconds
    return None


def format_seconds(seconds: float) -> str:
    """Seconds as Go's FormatFloat(v, 'f', -1, 64) writes them."""
    text = repr(round(seconds, 6))
    if "e" in text or "E" in text:
        text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text[:-2] if text.endswith(".0") else text


def json_seconds(seconds: float) -> float | int:
    """Seconds for JSON: an integer when whole, as Go's encoder writes a float64."""
    value = round(seconds, 6)
    return int(value) if value.is_integer() else value


def _path_param(request: web.Request) -> str:
    path = request.query.get("path", "")
    problem = path_name_error(path)
    if problem is not None:
        raise BadRequest(f"invalid path name: {problem} ({path[:200]})")
    return path


def _time_param(request: web.Request, name: str, *, required: bool) -> datetime | None:
    raw = request.query.get(name, "")
    if raw == "" and not required:
        return None
    parsed = parse_rfc3339(raw)
    if parsed is None:
        raise BadRequest(f"invalid {name}: not an RFC 3339 time")
    return parsed


def _duration_param(request: web.Request) -> float:
    seconds = parse_duration(request.query.get("duration", ""))
    if seconds is None:
        raise BadRequest("invalid duration: not a number of seconds")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DURATION:
        raise BadRequest(f"invalid duration: must be above 0 and at most {MAX_DURATION:.0f}")
    return seconds


def _format_param(request: web.Request) -> str:
    fmt = request.query.get("format", "")
    if fmt not in ("", "fmp4", "mp4"):
        raise BadRequest(f"invalid format: {fmt[:50]}")
    return fmt or "fmp4"


async def _authorize(request: web.Request, server: MediaServer, path: str) -> dict[str, Any]:
    try:
        return await authorize(token_from(request.query, request.headers), server.keys, path)
    except AuthError as exc:
        raise _unauthorized(request, exc) from None


def _check_range(
    request: web.Request, claims: dict[str, Any], start: datetime | None, end: datetime | None
) -> None:
    try:
        check_range(claims, start, end)
    except AuthError as exc:
        raise _unauthorized(request, exc) from None


def _unauthorized(request: web.Request, exc: AuthError) -> web.HTTPUnauthorized:
    log.info("connection %s failed to authenticate: %s", request.remote, exc)
    return web.HTTPUnauthorized(
        content_type="application/json",
        text='{"status":"error","error":"authentication error"}',
        headers={"WWW-Authenticate": 'Basic realm="mediamtx"'},
    )


async def handle_list(request: web.Request) -> web.StreamResponse:
    """GET /list?path=&start=&end= → `[{"start", "duration", "url"}]` of continuous spans."""
    server = request.app[MEDIA_SERVER]
    try:
        path = _path_param(request)
        claims = await _authorize(request, server, path)
        start = _time_param(request, "start", required=False)
        end = _time_param(request, "end", required=False)
    except BadRequest as exc:
        return error_response(400, str(exc))
    _check_range(request, claims, start, end)
    loop = asyncio.get_running_loop()
    try:
        spans = await loop.run_in_executor(
            server.pool, list_spans, server.recordings, path, start, end, server.cache
        )
    except NoSegmentsFound as exc:
        return error_response(404, str(exc))
    base = (
        server.public_url.rstrip("/") if server.public_url else f"{request.scheme}://{request.host}"
    )
    entries = []
    for span in spans:
        query = urlencode(
            sorted(
                {
                    "duration": format_seconds(span.duration),
                    "path": path,
                    "start": format_rfc3339(span.start),
                }.items()
            )
        )
        entries.append(
            {
                "start": format_rfc3339(span.start),
                "duration": json_seconds(span.duration),
                "url": f"{base}/get?{query}",
            }
        )
    return web.json_response(entries)


async def handle_get(request: web.Request) -> web.StreamResponse:
    """GET /get?path=&start=&duration=&format= → the footage as video/mp4, by stream copy."""
    server = request.app[MEDIA_SERVER]
    try:
        path = _path_param(request)
        claims = await _authorize(request, server, path)
        start = _time_param(request, "start", required=True)
        duration = _duration_param(request)
        fmt = _format_param(request)
    except BadRequest as exc:
        return error_response(400, str(exc))
    assert start is not None
    end = start + timedelta(seconds=duration)
    _check_range(request, claims, start, end)
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    try:
        segments = await loop.run_in_executor(
            server.pool, find_segments, server.recordings, path, start, end
        )
        archive = await loop.run_in_executor(
            server.pool, open_archive, segments, start, duration, fmt, cancel, server.cache
        )
    except NoSegmentsFound as exc:
        return error_response(404, str(exc))
    except asyncio.CancelledError:
        cancel.set()
        raise
    try:
        return await _stream(request, server, archive, cancel)
    finally:
        archive.close()


async def _stream(
    request: web.Request, server: MediaServer, archive: Archive, cancel: threading.Event
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(headers={"Content-Type": "video/mp4", "Accept-Ranges": "none"})
    if archive.content_length is not None:
        response.content_length = archive.content_length
    pending: asyncio.Future[bytes] | None = None
    try:
        await response.prepare(request)
        pending = loop.run_in_executor(server.pool, archive.read)
        while True:
            chunk = await pending
            pending = None
            if not chunk:
                break
            # Read the next chunk while this one goes out.
            pending = loop.run_in_executor(server.pool, archive.read)
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError) as exc:
        log.info("playback client %s went away (%s)", request.remote, type(exc).__name__)
        if isinstance(exc, asyncio.CancelledError):
            raise
    except (SegmentError, OSError, Cancelled) as exc:
        # Bytes are out already: all that can be said is to cut the connection.
        log.error("archive of %s stopped: %s", request.query.get("path"), type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
    finally:
        cancel.set()
        if pending is not None:
            await asyncio.wait([pending])
    return response


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "OPTIONS, GET",
                "Access-Control-Allow-Headers": "Authorization",
            },
        )
    try:
        return await handler(request)
    except web.HTTPUnauthorized:
        raise
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason.lower())
        raise
    except Exception as exc:  # one error shape, never a stack trace
        log.error("media server: %s on %s", type(exc).__name__, request.path)
        return error_response(500, "internal error")


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Credentials"] = "true"


def create_media_app(
    recordings: Path, keys: KeySource, *, public_url: str | None = None
) -> web.Application:
    """The media server as an aiohttp application, serving recordings under `recordings`."""
    _redact_access_log()
    app = web.Application(middlewares=[_errors])
    server = MediaServer(recordings=recordings, keys=keys, public_url=public_url)
    app[MEDIA_SERVER] = server

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        server.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mediaserver")
        yield
        server.pool.shutdown(wait=True, cancel_futures=True)
        server.pool = None

    app.cleanup_ctx.append(pool_ctx)
    app.on_response_prepare.append(_cors)
    app.router.add_get("/list", handle_list, allow_head=False)
    app.router.add_get("/get", handle_get, allow_head=False)
    return app
