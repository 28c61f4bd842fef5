"""A sliding-window counter per key, as Laravel's RateLimiter counts attempts."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# Bound memory under a flood of distinct keys.
_MAX_KEYS = 100_000


class Throttle:
    """Counts hits per key in a sliding window; past `limit` the key must wait."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return hits

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 if it may now."""
        hits = self._recent(key)
        if len(hits) < self._limit:
            return 0
        return max(1, int(hits[0] + self._window - self._clock() + 0.999))

    def hit(self, key: str) -> None:
        """Record one hit for `key`."""
        self._recent(key)
        if len(self._hits) > _MAX_KEYS:
            self._hits.clear()
        self._hits.setdefault(key, deque()).append(self._clock())

    def clear(self, key: str) -> None:
        """Forget the hits of `key` (after a successful login)."""
        self._hits.pop(key, None)
