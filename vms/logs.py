"""Logging: one redaction for every line, an access log, and unexpected errors with tracebacks.

Every record goes through `RedactingFormatter`, so neither a message, its arguments nor a
traceback can carry a token, a signature or a password into the log. Unexpected errors are
logged once, with their traceback (`log_unexpected`); client mistakes that a library logs with
its own traceback (a malformed request line, say) are cut to one line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_SECRET_PARAMS = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:jwt|signature|token|access_token|auth|password)=)[^&\s\"']*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with secret query values, credentials and anything shaped like a JWT blanked."""
    text = _SECRET_PARAMS.sub(rf"\1{_REDACTED}", text)
    text = _BEARER.sub(rf"\1 {_REDACTED}", text)
    return _JWT.sub(_REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output, traceback included, has passed through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then redact."""
        return redact(super().format(record))


def log_unexpected(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an error nobody expected, once, with its traceback (redacted like every line)."""
    logger.error("%s failed: %s", what, type(exc).__name__, exc_info=exc)


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
            bytes_sent(response),
            time * 1000,
        )


def bytes_sent(response: web.StreamResponse) -> int:
    """Bytes written for `response`, headers included.

    A file sent with sendfile() bypasses the writer that counts bytes, which then holds only
    the headers; the body is Content-Length then (sendfile either sends it all or raises).
    """
    size = response.body_length
    length = response.content_length
    if isinstance(response, web.FileResponse) and length and size < length:
        size += length
    return size


class _OneLine(logging.Filter):
    """Turns a library's log of a client's mistake into one line naming the exception's type.

    aiohttp logs a malformed request with its traceback and the raw bytes it could not parse;
    the traceback says nothing about this service, and the bytes may be anything.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.msg} ({type(record.exc_info[1]).__name__})"
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return True


_CLIENT_NOISE = ("aiohttp.server", "aiohttp.websocket")


def scrub_library_logs() -> None:
    """Cut aiohttp's logs of malformed requests to one line (idempotent)."""
    for name in _CLIENT_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLine) for f in logger.filters):
            logger.addFilter(_OneLine())


class OncePerInterval(logging.Filter):
    """Lets a message that starts with one of `prefixes` through once per `interval` seconds.

    The next one let through says how many were held back, so a flood reads as one line a
    minute with a count instead of millions of lines.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...],
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(self.prefixes)):
            return True
        now = self._clock()
        if now < self._next:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.getMessage()} ({self._held} more held back)"
            record.args = ()
        self._held = 0
        self._next = now + self.interval
        return True


# asyncio logs this for every accept() that fails for want of a file descriptor: up to the
# listen backlog per loop pass, retried every second; 1.47 million lines in 100 s once.
_FLOODS = ("socket.accept() out of system resource",)


def throttle_library_floods() -> None:
    """Let asyncio's out-of-descriptors message through at most once a minute (idempotent)."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, OncePerInterval) for f in logger.filters):
        logger.addFilter(OncePerInterval(_FLOODS))


class JsonFormatter(RedactingFormatter):
    """One JSON object per line: time, level, logger, message, audit fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON, redacted like every line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            entry["audit"] = audit
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


LOG_FORMATS = ("text", "json")


def setup_logging(level: int = logging.INFO, log_format: str = "text") -> None:
    """Timestamped lines (or JSON objects) on stderr, every one redacted."""
    logging.basicConfig(level=level)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
