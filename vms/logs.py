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


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped lines on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
