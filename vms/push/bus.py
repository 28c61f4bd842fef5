"""Push across processes: the hub's events, socket bindings and session ends over Redis pub/sub.

Every process publishes what its hub is asked to do on one Redis channel and delivers what
the others publish to its own sockets. Its own sockets get its own events at once, from the
hub itself, and the copy that comes back from Redis is dropped by its origin id: a device on
this process is reached even while Redis is away, and never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from vms.logs import log_unexpected
from vms.preflight import StartupError
from vms.push.hub import Hub

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

PREFIX = "vms:"
VERSION = 1
# Messages waiting for Redis (while it is away) beyond this many are dropped as they come.
MAX_PENDING = 10_000
CONNECT_TIMEOUT = 5.0
FIRST_BACKOFF, MAX_BACKOFF = 0.1, 5.0
STOP_TIMEOUT = 1.0
# A connection idle this long is PINGed before use: a peer gone without a word is noticed.
HEALTH_CHECK = 15.0

RereadHook = Callable[[], Awaitable[object]]


def channel_name(app_key: str) -> str:
    """The Redis channel of one site: prefixed, and apart from other sites on the same Redis
    (pub/sub ignores the database number, the app key tells sites apart)."""
    return f"{PREFIX}push:{app_key}"


def redis_errors() -> tuple[type[Exception], ...]:
    """What a lost or refusing Redis raises."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


async def connect(url: str) -> Redis:
    """A client for `url`, checked with a PING; StartupError (password never shown) if not."""
    from redis.asyncio import Redis

    client = Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=CONNECT_TIMEOUT,
        health_check_interval=HEALTH_CHECK,
    )
    try:
        async with asyncio.timeout(2 * CONNECT_TIMEOUT):
            await client.ping()
    except redis_errors() as exc:
        await client.aclose()
        raise StartupError(f"cannot use Redis at {safe_url(url)}: {exc}") from None
    return client


def safe_url(url: str) -> str:
    """`url` without its user and password, fit for a log line."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2].partition('?')[0]}"  # ?password= too


class RedisBus:
    """The hub's relay to the other processes (`Hub.relay`), and their events to the hub.

    It uses `redis` (a client of `connect`) and leaves closing it to its owner.
    """

    def __init__(self, redis: Redis, hub: Hub, app_key: str) -> None:
        self.redis = redis
        self._hub = hub
        self._channel = channel_name(app_key)
        self._origin = secrets.token_hex(8)
        self._pending: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._dropped = 0
        self._started = False  # subscribed once already: a new subscription is a return
        # Set while the subscription is live (tests and monitoring wait on it).
        self.subscribed = asyncio.Event()
        # Called when another process asks every process to re-read sessions (SIGHUP there).
        self.on_reread: RereadHook | None = None
        # Called with a session another process ended, before its sockets here are closed
        # (the service forgets the sessions it remembers, so its token stops working here too).
        self.on_ended: Callable[[str], None] | None = None

    async def start(self) -> None:
        """Subscribe, then relay in both directions until `stop`."""
        self._hub.relay = self
        for run, name in (
            (self._read_forever, "push-bus-reader"),
            (self._write, "push-bus-writer"),
        ):
            task = asyncio.create_task(run(), name=name)
            self._tasks.add(task)
        try:
            async with asyncio.timeout(2 * CONNECT_TIMEOUT):
                await self.subscribed.wait()
        except TimeoutError:
            await self.stop()
            raise StartupError("Redis did not accept the push subscription in time") from None

    async def stop(self) -> None:
        """Stop relaying; what Redis has not taken within a second is dropped."""
        self._hub.relay = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self._pending.join()
        for task in (*self._tasks, *self._handlers):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._handlers, return_exceptions=True)

    # Relay: what this process's hub sends to the others

    def event(self, channel: str, event: str, data: Mapping[str, Any]) -> None:
        """Publish an event to the other processes' sockets on `channel`."""
        self._send({"kind": "event", "channel": channel, "event": event, "data": dict(data)})

    def bind(self, socket_id: str, session_id: str) -> None:
        """Bind another process's socket to a session."""
        self._send({"kind": "bind", "socket_id": socket_id, "session_id": session_id})

    def session_ended(self, session_id: str) -> None:
        """Close the session's sockets on the other processes."""
        self._send({"kind": "ended", "session_id": session_id})

    def reread(self) -> None:
        """Ask the other processes to re-read sessions from the database, as SIGHUP did here."""
        self._send({"kind": "reread"})

    def _send(self, message: dict[str, Any]) -> None:
        text = json.dumps({"v": VERSION, "from": self._origin, **message}, separators=(",", ":"))
        try:
            self._pending.put_nowait(text)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("push bus: Redis is behind; dropping messages to other processes")

    async def _write(self) -> None:
        """Publish in order; while Redis is away, keep the message and retry with backoff."""
        text = None
        backoff = FIRST_BACKOFF
        while True:
            if text is None:
                text = await self._pending.get()
            try:
                await self.redis.publish(self._channel, text)
            except redis_errors() as exc:
                if backoff == FIRST_BACKOFF:
                    log.warning("push bus: cannot publish to Redis (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            if backoff != FIRST_BACKOFF or self._dropped:
                log.info("push bus: publishing again (%d messages dropped)", self._dropped)
                self._dropped = 0
            self._pending.task_done()
            text = None
            backoff = FIRST_BACKOFF

    # Reader: what the other processes send to this process's hub

    async def _read_forever(self) -> None:
        """Subscribe and read; when Redis goes away, log once and subscribe again with backoff."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                await self._read()
            except redis_errors() as exc:
                if self.subscribed.is_set():  # it was live: a new outage
                    self.subscribed.clear()
                    backoff = FIRST_BACKOFF
                    log.warning(
                        "push bus: lost Redis (%s); local sockets only until it is back", exc
                    )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    async def _read(self) -> None:
        # Its own connection; a quiet channel is not an error, each wait ends in a health check.
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self._channel)
            if self._started:
                log.info("push bus: Redis is back; subscribed again")
            self._started = True
            self.subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=HEALTH_CHECK)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    self.handle(message.get("data"))
                except Exception as exc:  # a bug here must cost one message, not the relay
                    log_unexpected(log, "push bus: a message from Redis", exc)

    def handle(self, raw: object) -> None:
        """Act on one message from the channel; a malformed one is dropped with a log line."""
        message = _parse(raw)
        if message is None:
            log.warning("push bus: dropped a malformed message: %.120r", raw)
            return
        if message["from"] == self._origin:
            return  # this process's own: its sockets had it from the hub already
        kind = message["kind"]
        if kind == "event":
            self._hub.deliver(message["channel"], message["event"], message["data"])
        elif kind == "bind":
            self._hub.bind_local(message["socket_id"], message["session_id"])
        elif kind == "ended":
            if self.on_ended is not None:
                self.on_ended(message["session_id"])
            self._handle_later(self._hub.disconnect_local(message["session_id"]))
        elif kind == "reread" and self.on_reread is not None:
            self._handle_later(self.on_reread())

    def _handle_later(self, work: Awaitable[object]) -> None:
        """Closing sockets waits for them; the reader must not."""

        async def run() -> object:
            try:
                return await work
            except Exception as exc:
                log_unexpected(log, "push bus: handling a message", exc)
                return None

        task = asyncio.create_task(run(), name="push-bus-handler")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)


_FIELDS: dict[str, tuple[str, ...]] = {
    "event": ("channel", "event"),
    "bind": ("socket_id", "session_id"),
    "ended": ("session_id",),
    "reread": (),
}


def _parse(raw: object) -> dict[str, Any] | None:
    """The message if it is one this version wrote, else None."""
    if not isinstance(raw, bytes | str):
        return None
    with contextlib.suppress(ValueError, RecursionError):
        message = json.loads(raw)
        if not isinstance(message, dict) or message.get("v") != VERSION:
            return None
        kind = message.get("kind")
        fields = _FIELDS.get(kind) if isinstance(kind, str) else None
        if fields is None or not isinstance(message.get("from"), str):
            return None
        if not all(isinstance(message.get(name), str) for name in fields):
            return None
        if message["kind"] == "event" and not isinstance(message.get("data"), dict):
            return None
        return message
    return None
