"""Logging set-up and an access log that never writes tokens or signatures."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

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


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped lines on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
