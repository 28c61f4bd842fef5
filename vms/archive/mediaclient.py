"""Client for media servers speaking MediaMTX's playback API; their replies are untrusted."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from vms import jsontext
from vms.dates import format_rfc3339, parse_date, utcnow
from vms.urls import media_list

log = logging.getLogger(__name__)

_MAX_LIST_BYTES = 4 * 1024 * 1024
_CACHE_SIZE = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A range that ended this long ago has settled: new footage can no longer appear in it.
_SETTLED_AFTER = timedelta(minutes=2)


# (media server, path, start, end) of a question asked.
_Key = tuple[str, str, float, float]


class MediaUnavailable(Exception):
    """The media server could not be asked, or answered something unusable."""


@dataclass(frozen=True)
class Span:
    """A stretch of continuous recording."""

    start: datetime
    duration: float

    @property
    def end(self) -> datetime:
        """When the span stops."""
        return self.start + timedelta(seconds=self.duration)


def parse_spans(body: bytes) -> list[Span]:
    """The entries of a /list reply; MediaUnavailable if it is not what MediaMTX sends."""
    try:
        entries = jsontext.loads(body)
    except ValueError:
        raise MediaUnavailable("media server sent a list that is not JSON") from None
    if not isinstance(entries, list):
        raise MediaUnavailable("media server sent a list that is not a JSON array")
    spans = []
    for entry in entries:
        start = entry.get("start") if isinstance(entry, dict) else None
        duration = entry.get("duration") if isinstance(entry, dict) else None
        parsed = _listed_time(start) if isinstance(start, str) else None
        if (
            parsed is None
            or isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 <= duration < 10 * 365 * 86400
        ):
            raise MediaUnavailable("media server sent a malformed list entry")
        spans.append(Span(parsed, float(duration)))
    return spans


# The fraction of an RFC 3339 time beyond microseconds (MediaMTX lists nanoseconds).
_SUB_MICRO = re.compile(r"\.\d{6}(\d+)")


def _listed_time(text: str) -> datetime | None:
    """A /list entry's start, rounded up to the microsecond: a start a hair before the
    recording (the nanoseconds a datetime cannot hold) is "inside a gap" to MediaMTX, which
    answers 404, and one after its first frame would make that frame lead-in."""
    parsed = parse_date(text, UTC)
    digits = _SUB_MICRO.search(text)
    if parsed is not None and digits is not None and int(digits.group(1)):
        return parsed + timedelta(microseconds=1)
    return parsed


def clip_spans(spans: list[Span], start: datetime, end: datetime) -> tuple[Span, ...]:
    """The parts of `spans` inside [start, end), in time order, overlaps merged."""
    clipped: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        begin, stop = max(span.start, start), min(span.end, end)
        if stop <= begin:
            continue
        if clipped and begin <= clipped[-1].end:
            last = clipped.pop()
            begin, stop = last.start, max(stop, last.end)
        clipped.append(Span(begin, (stop - begin).total_seconds()))
    return tuple(clipped)


class MediaClient:
    """Asks media servers what they recorded, with a small cache and one request per question."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        token_for: Callable[[str, datetime, datetime], str],
        *,
        ttl: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._http = http
        self._token_for = token_for
        self._ttl = ttl
        self._clock = clock
        self._cache: OrderedDict[_Key, tuple[float, tuple[Span, ...]]] = OrderedDict()
        self._inflight: dict[_Key, asyncio.Future[tuple[Span, ...]]] = {}

    async def recorded(
        self, server: str, path: str, start: datetime, end: datetime, *, fresh: bool = False
    ) -> tuple[Span, ...]:
        """The recorded spans of `path` within [start, end), clipped to it, in order.

        `fresh` asks the media server even if a recent answer is cached (an archive's file
        must hold what is recorded now).
        """
        if end <= _EPOCH:  # nothing was recorded before 1970; don't ask about year 1
            return ()
        start = max(start, _EPOCH)
        key = (server, path, start.timestamp(), end.timestamp())
        cached = None if fresh else self._cache.get(key)
        if cached and (cached[0] == float("inf") or time.monotonic() < cached[0]):
            self._cache.move_to_end(key)
            return cached[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[Span, ...]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            found = await self._ask(server, path, start, end)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(found)
        finally:
            del self._inflight[key]
        # What a settled range holds only changes when retention deletes it: keep it longer.
        settled = end < self._clock() - _SETTLED_AFTER
        expiry = time.monotonic() + (self._ttl * 30 if settled else self._ttl)
        self._cache[key] = (expiry, found)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    async def _ask(
        self, server: str, path: str, start: datetime, end: datetime
    ) -> tuple[Span, ...]:
        query = {"path": path, "start": format_rfc3339(start), "end": format_rfc3339(end)}
        url = media_list(server)
        headers = {"Authorization": f"Bearer {self._token_for(path, start, end)}"}
        try:
            async with self._http.get(
                url, params=query, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                if response.status == 404:
                    return ()
                if response.status != 200:
                    log.warning(
                        "media server %s answered /list for %s with HTTP %d",
                        server,
                        path,
                        response.status,
                    )
                    raise MediaUnavailable(f"media server answered HTTP {response.status}")
                body = await response.content.read(_MAX_LIST_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("media server %s unreachable: %s", server, type(exc).__name__)
            raise MediaUnavailable("media server unreachable") from None
        if len(body) > _MAX_LIST_BYTES:
            raise MediaUnavailable("media server sent an oversized list")
        return clip_spans(parse_spans(body), start, end)
