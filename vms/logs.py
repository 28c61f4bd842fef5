"""Logging set-up and an access log that never writes tokens or signatures."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_SECRET_PARAMS = re.compile(r"(?i)([?&](?:jwt|signature|token|access_token|auth)=)[^&]*")


def redact(path_qs: str) -> str:
    """The path and query with every secret-bearing parameter's value replaced."""
    return _SECRET_PARAMS.sub(r"\1[redacted]", path_qs)


class AccessLogger(AbstractAccessLogger):
    """One line per request: address, method, redacted path, status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the access line."""
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            response.body_length,
            time * 1000,
        )


class _NoTracebacks(logging.Filter):
    """Turns a library's exception log into one line naming the exception's type.

    aiohttp logs a bad request with its traceback and the raw bytes it could not parse,
    which may hold a token; neither belongs in a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.msg} ({type(record.exc_info[1]).__name__})"
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return True


_SCRUBBED = ("aiohttp.server", "aiohttp.web", "aiohttp.websocket", "asyncio")


def scrub_library_logs() -> None:
    """Keep tracebacks and request bytes out of the logs of aiohttp and asyncio (idempotent)."""
    for name in _SCRUBBED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebacks) for f in logger.filters):
            logger.addFilter(_NoTracebacks())


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped lines on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
