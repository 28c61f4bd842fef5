"""A sliding-window counter per key, as Laravel's RateLimiter counts attempts.

In process by default; with VMS_REDIS_URL, in Redis, so every process counts the same hits.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

# Bound memory under a flood of distinct keys.
_MAX_KEYS = 100_000
# While Redis is away, a throttle asks it again at most this often (seconds), so a login
# does not wait for a connection attempt each time.
_RETRY_REDIS_EVERY = 2.0


class Throttle(Protocol):
    """Counts hits per key in a sliding window; past its limit the key must wait."""

    async def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 if it may now."""
        ...

    async def hit(self, key: str) -> None:
        """Record one hit for `key`."""
        ...

    async def take(self, key: str) -> int:
        """Record a hit if `key` may try now and return 0; else its `retry_after`, no hit."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the hits of `key` (after a successful login)."""
        ...


class LocalThrottle:
    """`Throttle` in this process's memory."""

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

    async def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 if it may now."""
        hits = self._recent(key)
        if len(hits) < self._limit:
            return 0
        return max(1, int(hits[0] + self._window - self._clock() + 0.999))

    async def hit(self, key: str) -> None:
        """Record one hit for `key`."""
        self._recent(key)
        if len(self._hits) > _MAX_KEYS:
            self._hits.clear()
        self._hits.setdefault(key, deque()).append(self._clock())

    async def take(self, key: str) -> int:
        """Record a hit if `key` may try now and return 0; else its `retry_after`, no hit."""
        retry_after = await self.retry_after(key)
        if not retry_after:
            await self.hit(key)
        return retry_after

    async def clear(self, key: str) -> None:
        """Forget the hits of `key` (after a successful login)."""
        self._hits.pop(key, None)


# One sorted set per key, scored by Redis's own clock in ms (the processes' clocks may differ).
# KEYS[1] the set; ARGV: window ms, limit, 1 to record a hit when allowed, a unique member.
# Returns 0 (allowed, and recorded if asked) or the ms until the oldest hit leaves the window.
_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return 0
"""
_HIT = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 0
"""


class RedisThrottle:
    """`Throttle` in Redis, shared by every process; each step is one atomic script.

    While Redis is away it counts in this process instead (and says so once), so a login
    is still throttled and still answered.
    """

    def __init__(self, redis: Redis, name: str, limit: int, window: float) -> None:
        from vms.push.bus import redis_errors  # the bus imports this module

        self._errors = redis_errors()
        self._redis = redis
        self._prefix = f"vms:throttle:{name}:"
        self._limit = limit
        self._window_ms = max(1, int(window * 1000))
        self._check = redis.register_script(_SCRIPT)
        self._hit = redis.register_script(_HIT)
        self._fallback = LocalThrottle(limit, window)
        self._degraded = False
        self._retry_at = 0.0

    def _key(self, key: str) -> str:
        # Hashed: keys hold logins and addresses, of any length.
        return self._prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    @staticmethod
    def _member() -> str:
        return f"{time.time_ns()}.{secrets.token_hex(6)}"  # unique across processes

    async def _run(self, script: AsyncScript, key: str, *args: str | int) -> int | None:
        """The script's answer, or None while Redis is away."""
        if self._degraded and time.monotonic() < self._retry_at:
            return None
        try:
            result = await script(keys=[self._key(key)], args=list(args))
        except self._errors as exc:
            if not self._degraded:
                log.warning("throttle: Redis unavailable (%s); counting in this process", exc)
                self._degraded = True
            self._retry_at = time.monotonic() + _RETRY_REDIS_EVERY
            return None
        if self._degraded:
            log.info("throttle: Redis is back; counting there again")
            self._degraded = False
        return int(result)

    async def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 if it may now."""
        ms = await self._run(self._check, key, self._window_ms, self._limit, 0, "")
        if ms is None:
            return await self._fallback.retry_after(key)
        return _seconds(ms)

    async def hit(self, key: str) -> None:
        """Record one hit for `key`."""
        await self._fallback.hit(key)
        await self._run(self._hit, key, self._window_ms, self._member())

    async def take(self, key: str) -> int:
        """Record a hit if `key` may try now and return 0; else its `retry_after`, no hit."""
        ms = await self._run(self._check, key, self._window_ms, self._limit, 1, self._member())
        if ms is None:
            return await self._fallback.take(key)
        if not ms:
            await self._fallback.hit(key)
        return _seconds(ms)

    async def clear(self, key: str) -> None:
        """Forget the hits of `key` (after a successful login)."""
        await self._fallback.clear(key)
        try:
            await self._redis.delete(self._key(key))
        except self._errors as exc:
            log.warning("throttle: cannot clear a key in Redis (%s)", exc)


def _seconds(ms: int) -> int:
    return 0 if ms <= 0 else max(1, (ms + 999) // 1000)


# Makes the throttle called `name`: `limit` hits in `window` seconds.
ThrottleFactory = Callable[[str, int, float], Throttle]


def local_throttle(name: str, limit: int, window: float) -> Throttle:
    """A `ThrottleFactory` counting in this process."""
    return LocalThrottle(limit, window)


def redis_throttles(redis: Redis) -> ThrottleFactory:
    """A `ThrottleFactory` counting in `redis`, shared by every process."""

    def make(name: str, limit: int, window: float) -> Throttle:
        return RedisThrottle(redis, name, limit, window)

    return make
