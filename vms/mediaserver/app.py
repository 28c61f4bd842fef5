"""The embedded media server: MediaMTX's playback API (`/list`, `/get`) over aiohttp.

Requests are checked in MediaMTX's order: path name, then the JWT, then the other parameters;
errors are `{"status": "error", "error": TEXT}` with MediaMTX's texts. Which segments a request
reads comes from the recordings index (`index`), kept current and warmed at start-up on a
thread of its own. Listing and remuxing run on the app's own small thread pool; a /get is
produced one chunk at a time, so nothing runs on behalf of a client between chunks and a
client that goes away stops the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

from vms.dates import format_rfc3339
from vms.mediaserver.auth import (
    AuthError,
    KeySource,
    authorize,
    check_range,
    credentials_from,
    token_from,
)
from vms.mediaserver.index import RecordingsIndex, Span
from vms.mediaserver.mp4read import SegmentError
from vms.mediaserver.params import (
    BadRequest,
    duration_param,
    format_param,
    format_seconds,
    json_seconds,
    path_param,
    time_param,
)
from vms.mediaserver.recordings import InfoCache, NoSegmentsFound
from vms.mediaserver.remux import Archive, Cancelled, open_archive
from vms.threads import run_blocking

log = logging.getLogger(__name__)

WORKERS = 4
# A client that takes no bytes for this long is cut off (MediaMTX's writeTimeout, applied to
# each write as its handlerWriteTimeout does).
WRITE_TIMEOUT = 10.0
# Each write is this much at most, so the timeout asks for progress, not for a fast link.
WRITE_SLICE = 64 * 1024
LIST_WAIT = 2.0  # seconds the port waits at most for the recordings to be listed


@dataclass
class PlaybackState:
    """State of one media server app."""

    recordings: Path
    trusted_keys: KeySource
    public_url: str | None
    index: RecordingsIndex
    write_timeout: float = WRITE_TIMEOUT
    cache: InfoCache = field(default_factory=InfoCache)
    pool: ThreadPoolExecutor | None = None


PLAYBACK = web.AppKey("playback", PlaybackState)


# encoding/json's HTML-safe escapes, which gin's JSON renderer keeps.
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def go_json_bytes(data: object) -> bytes:
    """JSON as gin's ctx.JSON writes it: compact, `<`, `>` and `&` escaped, UTF-8 kept."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text.encode("utf-8", "replace")


def go_json_response(data: object, status: int = 200) -> web.Response:
    """A gin ctx.JSON answer (`go_json_bytes`)."""
    return web.Response(
        status=status, body=go_json_bytes(data), content_type="application/json", charset="utf-8"
    )


def error_response(status: int, text: str) -> web.Response:
    """MediaMTX's error shape (playback server.writeError)."""
    return go_json_response({"status": "error", "error": text}, status=status)


class Unauthorized(Exception):
    """A request MediaMTX refuses with 401; `ask` when it came with no credentials at all."""

    def __init__(self, reason: AuthError, *, ask: bool) -> None:
        super().__init__(str(reason))
        self.ask = ask


async def _authorize(request: web.Request, server: PlaybackState, path: str) -> dict[str, Any]:
    """The claims of the request's token for playback of `path` (MediaMTX's doAuth)."""
    credentials = credentials_from(request.headers.getall("Authorization", []))
    token = token_from(request.rel_url.raw_query_string, credentials)
    try:
        return await authorize(token, server.trusted_keys, path)
    except AuthError as exc:
        ask = not (credentials.user or credentials.password or token)
        raise Unauthorized(exc, ask=ask) from None


async def handle_list(request: web.Request) -> web.StreamResponse:
    """GET /list?path=&start=&end= → `[{"start", "duration", "url"}]` of continuous spans."""
    server = request.app[PLAYBACK]
    path = path_param(request.query)
    claims = await _authorize(request, server, path)
    start = time_param(request.query, "start", required=False)
    end = time_param(request.query, "end", required=False)
    check_range(claims, start, end)
    spans = await run_blocking(server.pool, server.index.list_spans, path, start, end)
    base = (
        server.public_url.rstrip("/") if server.public_url else f"{request.scheme}://{request.host}"
    )
    # A month of short recordings is tens of thousands of entries: built off the loop.
    body = await run_blocking(server.pool, _list_body, spans, base, path)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _list_body(spans: list[Span], base: str, path: str) -> bytes:
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
    return go_json_bytes(entries)


async def handle_get(request: web.Request) -> web.StreamResponse:
    """GET /get?path=&start=&duration=&format= → the footage as video/mp4, by stream copy."""
    server = request.app[PLAYBACK]
    path = path_param(request.query)
    claims = await _authorize(request, server, path)
    start = time_param(request.query, "start", required=True)
    duration = duration_param(request.query)
    fmt = format_param(request.query)
    assert start is not None
    if duration <= 0:
        # MediaMTX reads such a range and finds no sample in it.
        raise NoSegmentsFound
    try:
        end = start + timedelta(seconds=duration)
    except OverflowError:  # Go's clock reaches past year 9999; nothing is recorded there
        raise NoSegmentsFound from None
    check_range(claims, start, end)
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    try:
        segments = await run_blocking(server.pool, server.index.segments_for_get, path, start, end)
        archive = await loop.run_in_executor(
            server.pool, open_archive, segments, start, duration, fmt, cancel, server.cache
        )
    except asyncio.CancelledError:
        cancel.set()
        raise
    try:
        return await _stream(request, server, archive, cancel)
    finally:
        archive.close()


async def _stream(
    request: web.Request, server: PlaybackState, archive: Archive, cancel: threading.Event
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
            view = memoryview(chunk)
            for at in range(0, len(view), WRITE_SLICE):
                async with asyncio.timeout(server.write_timeout):
                    await response.write(view[at : at + WRITE_SLICE])
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError) as exc:
        log.info("playback client %s went away (%s)", request.remote, type(exc).__name__)
        if isinstance(exc, asyncio.CancelledError):
            raise
    except TimeoutError:
        log.info(
            "playback client %s took nothing for %.0f s, cut off",
            request.remote,
            server.write_timeout,
        )
        if request.transport is not None:
            request.transport.close()
    except (SegmentError, OSError, Cancelled) as exc:
        # Bytes are out already: all that can be said is to cut the connection.
        log.error("archive of %s stopped: %s", request.query.get("path"), type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
    finally:
        cancel.set()
        if pending is not None:
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # a read stopped by `cancel` ends in Cancelled: seen
    return response


async def _warm(
    index: RecordingsIndex,
    executor: ThreadPoolExecutor,
    stop: threading.Event,
    listed: asyncio.Event,
) -> None:
    try:
        found = await run_blocking(executor, index.list_paths, stop)
        listed.set()
        await run_blocking(executor, index.learn_all, found, stop)
    except OSError as exc:
        log.warning("recordings index: warming stopped (%s)", exc)
    except Exception:  # requests still index what they need; keep the traceback
        log.exception("recordings index: warming failed")
    finally:
        listed.set()


# gin's answer to a route it does not have (any other method included).
_NOT_FOUND = "404 page not found"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # MediaMTX's middlewarePreflightRequests runs before routing: any path.
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "OPTIONS, GET",
                "Access-Control-Allow-Headers": "Authorization",
            },
        )
    # One map from exception to MediaMTX's answer, so handlers read in MediaMTX's order of
    # checks: path name, then the JWT, then the other parameters.
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(400, str(exc))
    except Unauthorized as exc:
        headers = {}
        if exc.ask:
            headers["WWW-Authenticate"] = 'Basic realm="mediamtx"'
        else:
            log.info("connection %s failed to authenticate: %s", request.remote, exc)
        response = error_response(401, "authentication error")
        response.headers.update(headers)
        return response
    except AuthError as exc:  # the VMS's range claim: the token came, and does not cover this
        log.info("connection %s failed to authenticate: %s", request.remote, exc)
        return error_response(401, "authentication error")
    except NoSegmentsFound as exc:
        return error_response(404, str(exc))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return web.Response(status=404, body=_NOT_FOUND.encode(), content_type="text/plain")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason.lower())
        raise
    except Exception as exc:  # one error shape, never a stack trace
        log.error("media server: %s on %s", type(exc).__name__, request.path)
        return error_response(500, "internal error")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    # httpp.Server: handlerServerHeader, and handlerOrigin with playbackAllowOrigins ["*"].
    response.headers["Server"] = "mediamtx"
    response.headers["Access-Control-Allow-Origin"] = "*"


def create_media_app(
    recordings: Path,
    trusted_keys: KeySource,
    *,
    public_url: str | None = None,
    write_timeout: float = WRITE_TIMEOUT,
) -> web.Application:
    """The media server as an aiohttp application, serving recordings under `recordings`."""
    app = web.Application(middlewares=[_errors])
    server = PlaybackState(
        recordings=recordings,
        trusted_keys=trusted_keys,
        public_url=public_url,
        index=RecordingsIndex(recordings),
        write_timeout=write_timeout,
    )
    app[PLAYBACK] = server

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        server.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mediaserver")
        yield
        server.pool.shutdown(wait=True, cancel_futures=True)
        server.pool = None

    async def warm_ctx(app: web.Application) -> AsyncIterator[None]:
        # List every path before the port opens (a month of one path: about 50 ms; never
        # more than LIST_WAIT), so that the first request after a start finds its segments
        # by bisection; then learn them all in the background, on a thread of its own.
        stop = threading.Event()
        listed = asyncio.Event()
        warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediaserver-index")
        task = asyncio.create_task(_warm(server.index, warmer, stop, listed))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listed.wait(), LIST_WAIT)
        yield
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        warmer.shutdown(wait=True)

    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(warm_ctx)
    app.on_response_prepare.append(_headers)
    app.router.add_get("/list", handle_list, allow_head=False)
    app.router.add_get("/get", handle_get, allow_head=False)
    return app
