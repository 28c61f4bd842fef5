"""The push hub: Pusher protocol 7 sockets, private channels, and bounded fan-out to them.

One cohesive thing, kept whole on purpose: the hub owns every socket's lifetime, its one
reader and its at most one writer, and the channel and session tables they all update; the
per-socket state is `connection.Connection`, the wire format `protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from vms.logs import log_unexpected
from vms.push import protocol
from vms.push.connection import Close, Connection
from vms.push.protocol import CloseCode, FrameError
from vms.push.signing import verify_channel

log = logging.getLogger(__name__)

SubscribedHook = Callable[[str, str], Awaitable[None]]


class Relay(Protocol):
    """Carries what the hub is asked to do to the hubs of the other processes (`vms.push.bus`)."""

    def event(self, channel: str, event: str, data: Mapping[str, Any]) -> None:
        """Publish an event to the sockets of every other process; never waits."""
        ...

    def bind(self, socket_id: str, session_id: str) -> None:
        """Bind a socket that another process holds to a session; never waits."""
        ...

    def session_ended(self, session_id: str) -> None:
        """Close the session's sockets on every other process; never waits."""
        ...


_RATE_LIMITED = "Rate limit exceeded"
_PING = protocol.encode(protocol.ping())
_PONG = protocol.encode(protocol.pong())


class Hub:
    """Pusher Channels protocol 7 server for private channels, one per application."""

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        activity_timeout: float = 30.0,
        max_queue: int = 256,
        max_frame: int = 10_240,
        max_channels: int = 100,
        pong_timeout: float = 30.0,
        send_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_connections: int = 10_000,
        max_messages_per_second: float = 10.0,
        message_burst: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app_key = app_key
        self._app_secret = app_secret
        self._activity_timeout = activity_timeout
        self._pong_timeout = pong_timeout
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._max_queue = max_queue
        self._max_frame = max_frame
        self._max_channels = max_channels
        self._max_connections = max_connections
        self._rate = max_messages_per_second
        self._burst = message_burst
        self._clock = clock
        self._shutting_down = False
        self._connections: dict[str, Connection] = {}
        self._channels: dict[str, set[Connection]] = {}
        self._sessions: dict[str, set[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlogged: set[Connection] = set()  # the sockets that have a writer task
        # One timer for the whole hub, armed only while some socket has a writer: a send
        # stuck longer than send_timeout is aborted within a quarter of it (at most 1 s) after.
        self._sweep_every = min(1.0, send_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counters: Counter[str] = Counter()
        # Called after a socket joins a channel (the archive side replays what it missed);
        # set once while the service is wired, like every other callback of the service.
        self.on_subscribed: SubscribedHook | None = None
        # With several processes (VMS_REDIS_URL), what this hub publishes or ends also goes
        # to the others through this; set once while the service is wired. None: one process.
        self.relay: Relay | None = None

    # Public API

    @property
    def connection_count(self) -> int:
        """Sockets currently connected."""
        return len(self._connections)

    @property
    def task_count(self) -> int:
        """Background tasks the hub owns: one writer per socket that has frames backed up."""
        return len(self._tasks)

    @property
    def stats(self) -> dict[str, int]:
        """Gauges and counters for monitoring."""
        return {
            "connections": len(self._connections),
            "channels": len(self._channels),
            "subscriptions": sum(len(c.channels) for c in self._connections.values()),
            "tasks": len(self._tasks),
            "queued_frames": sum(c.queued for c in self._backlogged),
            **self._counters,
        }

    def channel_count(self, channel: str) -> int:
        """Sockets subscribed to `channel`."""
        return len(self._channels.get(channel, ()))

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws/app/{app_key}: run one Pusher socket until it closes."""
        # No permessage-deflate: browsers offer it, and a zlib compressor per socket costs
        # about 100 KB (116 KB instead of 20 KB per connection) to shrink small JSON frames.
        ws = web.WebSocketResponse(
            max_msg_size=self._max_frame, timeout=self._close_timeout, compress=False
        )
        await ws.prepare(request)
        refusal = self._refusal(request)
        if refusal is not None:
            self._counters["refused_connections"] += 1
            await self._refuse(ws, request.transport, *refusal)
            return ws
        self._loop = asyncio.get_running_loop()
        conn = Connection(self._new_socket_id(), ws, request.transport, self._burst, self._clock())
        self._connections[conn.socket_id] = conn
        try:
            advertised = max(1, math.ceil(self._activity_timeout))
            established = protocol.connection_established(conn.socket_id, advertised)
            self._send(conn, protocol.encode(established))
            log.debug("push: socket %s connected", conn.socket_id)
            await self._read(conn)
        finally:
            self._forget(conn)
            try:
                # aiohttp cancels this handler once the peer is gone, possibly right here.
                await self._stop_writer(conn)
            finally:
                conn.end()
                log.debug("push: socket %s closed (%s)", conn.socket_id, ws.close_code)
        return ws

    def publish(self, channel: str, event: str, data: Mapping[str, Any]) -> int:
        """Send `event` to every socket on `channel`; never waits. Returns sockets reached here.

        Call it on the event loop that serves the sockets (as the archive jobs do); from another
        thread, hand it over with `loop.call_soon_threadsafe`. The frame is encoded once and
        written straight to each idle socket; a socket with a backlog gets it queued instead.
        With a relay, the other processes' sockets on `channel` get it through the relay.
        """
        if self.relay is not None:
            self.relay.event(channel, event, data)
        return self.deliver(channel, event, data)

    def deliver(self, channel: str, event: str, data: Mapping[str, Any]) -> int:
        """`publish` to this process's sockets only (the relay hands over the others' events)."""
        members = self._channels.get(channel)
        if not members:
            return 0
        self._check_loop()
        frame = protocol.encode(protocol.event(channel, event, data))
        send = self._send
        reached = sum(1 for conn in tuple(members) if send(conn, frame))
        self._counters["published"] += 1
        self._counters["delivered"] += reached
        return reached

    def send_to_socket(
        self, socket_id: str, channel: str, event: str, data: Mapping[str, Any]
    ) -> bool:
        """Send `event` to one socket, only if it is subscribed to `channel`."""
        conn = self._connections.get(socket_id)
        if conn is None or channel not in conn.channels:
            return False
        self._check_loop()
        return self._send(conn, protocol.encode(protocol.event(channel, event, data)))

    def bind_session(self, socket_id: str, session_id: str) -> None:
        """Remember that `session_id` authorised this socket, so ending it closes the socket."""
        if not self.bind_local(socket_id, session_id) and self.relay is not None:
            # The device's socket may be on another process than its /broadcasting/auth.
            self.relay.bind(socket_id, session_id)

    def bind_local(self, socket_id: str, session_id: str) -> bool:
        """`bind_session` for a socket of this process; False if it has no such open socket."""
        conn = self._connections.get(socket_id)
        if conn is None or conn.closing:
            return False  # unknown sockets are ignored so callers cannot grow this map
        conn.sessions.add(session_id)
        self._sessions.setdefault(session_id, set()).add(conn)
        return True

    def session_ids(self) -> list[str]:
        """The sessions that authorised an open socket."""
        return list(self._sessions)

    async def disconnect_session(self, session_id: str) -> int:
        """Close (4009) every socket that session authorised; returns how many here."""
        if self.relay is not None:
            self.relay.session_ended(session_id)
        return await self.disconnect_local(session_id)

    async def disconnect_local(self, session_id: str) -> int:
        """`disconnect_session` for this process's sockets only."""
        conns = list(self._sessions.pop(session_id, ()))
        for conn in conns:
            self._close(conn, CloseCode.UNAUTHORIZED, "Connection is unauthorized", notify=True)
        await self._wait_closed(conns)
        return len(conns)

    async def close_all(self) -> None:
        """Shutdown: close every socket with 1001 GOING_AWAY and refuse new ones."""
        self._shutting_down = True
        conns = list(self._connections.values())
        for conn in conns:
            self._close(conn, WSCloseCode.GOING_AWAY, "Server shutting down", notify=False)
        await self._wait_closed(conns)

    # Connection lifetime

    def _check_loop(self) -> None:
        """Transports may only be written on their own loop's thread; refuse anything else."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            raise RuntimeError("Hub: call from the event loop serving the sockets")

    def _refusal(self, request: web.Request) -> tuple[int, str] | None:
        if self._shutting_down:
            return CloseCode.RECONNECT, "Server is shutting down; reconnect shortly"
        key = request.match_info.get("app_key", "")
        if not hmac.compare_digest(key.encode("utf-8"), self._app_key.encode("utf-8")):
            return CloseCode.APP_NOT_FOUND, "Application does not exist"
        refusal = protocol.protocol_refusal(request.query.get("protocol"))
        if refusal is not None:
            return refusal
        if len(self._connections) >= self._max_connections:
            return CloseCode.OVER_CAPACITY, "Over capacity"
        return None

    async def _refuse(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        code: int,
        message: str,
    ) -> None:
        """pusher-js reads the `pusher:error` during its handshake; others read the close code."""
        try:
            async with asyncio.timeout(2 * self._close_timeout):
                await ws.send_str(protocol.error(code, message))
                await ws.close(code=code, message=message.encode("utf-8"))
        except (TimeoutError, ConnectionError):
            if transport is not None:
                transport.abort()

    def _new_socket_id(self) -> str:
        while True:
            socket_id = f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"
            if socket_id not in self._connections:
                return socket_id

    def _forget(self, conn: Connection) -> None:
        self._connections.pop(conn.socket_id, None)
        for name in conn.channels:
            self._leave(conn, name)
        conn.channels.clear()
        for session_id in conn.sessions:
            members = self._sessions.get(session_id)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self._sessions[session_id]
        conn.sessions.clear()

    def _leave(self, conn: Connection, name: str) -> None:
        members = self._channels.get(name)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._channels[name]

    async def _stop_writer(self, conn: Connection) -> None:
        conn.stop()
        task = conn.writer
        if task is None:
            return
        try:
            # A writer in the middle of a send or a close finishes it, within its own bounds.
            await asyncio.wait({task}, timeout=self._send_timeout + 2 * self._close_timeout)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wait_closed(self, conns: Iterable[Connection]) -> None:
        try:
            async with asyncio.timeout(self._send_timeout + 3 * self._close_timeout):
                for conn in conns:
                    await conn.wait_ended()
        except TimeoutError:
            log.warning("push: some sockets did not close in time")

    # Writing: straight to an idle socket, else through at most one writer task per socket

    def _send(self, conn: Connection, frame: protocol.Outgoing) -> bool:
        """Send or queue a frame without waiting; a socket whose queue is full is cut off."""
        if conn.closing or conn.ws.closed:
            return False
        transport = conn.transport
        if transport is None or transport.is_closing():
            return False
        if conn.writer is None and transport.get_write_buffer_size() < conn.high_water:
            # Nothing queued or in flight, so writing now keeps the order; aiohttp writes its
            # own frames (pongs, closes) in one synchronous call too, so none interleave.
            # asyncio's write never blocks: what the kernel does not take stays buffered.
            try:
                transport.write(frame.wire)
            except RuntimeError:  # e.g. after write_eof(): the socket is unusable
                conn.abort()
                return False
            return True
        if conn.queued >= self._max_queue:
            # It has not read the last max_queue frames: it is stalled or too slow. A close
            # code in the 41xx range makes pusher-js wait before it reconnects.
            self._counters["slow_disconnects"] += 1
            log.warning("push: socket %s does not keep up; disconnecting", conn.socket_id)
            self._close(
                conn,
                CloseCode.OVER_CAPACITY,
                "Client too slow to receive messages",
                notify=False,
                drop_queued=True,
            )
            return False
        self._counters["queued_sends"] += 1
        conn.push(frame)
        self._start_writer(conn)
        return True

    def _close(
        self, conn: Connection, code: int, message: str, *, notify: bool, drop_queued: bool = False
    ) -> None:
        """Queue a close (see `Connection.close`) and make sure a writer will send it."""
        if conn.close(code, message, notify=notify, drop_queued=drop_queued):
            self._start_writer(conn)

    def _start_writer(self, conn: Connection) -> None:
        if conn.writer is not None or conn.stopped:
            return
        task = asyncio.create_task(self._write(conn), name=f"push-writer-{conn.socket_id}")
        conn.writer = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._backlogged.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    async def _write(self, conn: Connection) -> None:
        """Drain the queue, waiting whenever the transport is paused, then end."""
        try:
            while (item := conn.pop()) is not None:
                if isinstance(item, Close):
                    await self._close_socket(conn, item)
                    return
                conn.sending_since = self._clock()
                # Waits only while asyncio has paused the transport; `_sweep` bounds the wait.
                await conn.ws.send_frame(item.payload, WSMsgType.TEXT)
                conn.sending_since = None
        except ConnectionError:
            conn.closing = True  # the peer is gone; the reader sees it too
        finally:
            conn.sending_since = None
            conn.drop_queued()  # empty unless the socket is gone
            if conn.writer is asyncio.current_task():
                conn.writer = None
            self._backlogged.discard(conn)
            if not self._backlogged and self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None

    def _sweep(self) -> None:
        """Abort the sockets whose send has waited longer than send_timeout."""
        self._sweeper = None
        stuck_since = self._clock() - self._send_timeout
        for conn in tuple(self._backlogged):
            since = conn.sending_since
            if since is None or since > stuck_since:
                continue
            conn.sending_since = None
            self._counters["send_timeouts"] += 1
            if not conn.closing:
                # Its buffers have been full for send_timeout: a close frame would not get through.
                self._counters["slow_disconnects"] += 1
                log.warning("push: socket %s stopped reading; dropping it", conn.socket_id)
            conn.abort()
        if self._backlogged:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    async def _close_socket(self, conn: Connection, close: Close) -> None:
        try:
            async with asyncio.timeout(2 * self._close_timeout):
                await conn.ws.close(code=close.code, message=close.message.encode("utf-8"))
        except (TimeoutError, ConnectionError):
            conn.abort()

    # Reading: the handler's own task is the only reader

    async def _read(self, conn: Connection) -> None:
        ws = conn.ws
        while True:
            wait = self._pong_timeout if conn.awaiting_pong else self._activity_timeout
            try:
                msg = await ws.receive(timeout=wait)
            except TimeoutError:
                if conn.closing:
                    if conn.writer is None or conn.writer.done():
                        conn.abort()
                        return
                    continue  # the writer is closing it, within its own bounds
                if conn.awaiting_pong:
                    self._counters["pong_timeouts"] += 1
                    self._close(
                        conn, CloseCode.PONG_NOT_RECEIVED, "Pong reply not received", notify=True
                    )
                else:
                    conn.awaiting_pong = True
                    self._send(conn, _PING)
                continue
            conn.awaiting_pong = False  # any message shows the client is alive
            if msg.type is WSMsgType.TEXT:
                try:
                    await self._on_text(conn, msg.data)
                except Exception as exc:  # a bug here must cost one socket, not the hub
                    self._counters["internal_errors"] += 1
                    log_unexpected(log, f"push: socket {conn.socket_id}", exc)
                    self._close(conn, CloseCode.RECONNECT, "Internal server error", notify=True)
            elif msg.type is WSMsgType.BINARY:
                if self._take_token(conn):
                    self._send_error(conn, None, "Binary frames are not supported")
                else:
                    self._send_error(conn, CloseCode.CLIENT_EVENT_REJECTED, _RATE_LIMITED)
            else:
                return  # CLOSE, CLOSING, CLOSED or ERROR (e.g. a frame over max_frame)

    def _send_error(self, conn: Connection, code: int | None, message: str) -> None:
        self._send(conn, protocol.encode(protocol.error(code, message)))

    def _take_token(self, conn: Connection) -> bool:
        """Token bucket per socket: `message_burst` at once, then the configured rate."""
        now = self._clock()
        conn.tokens = min(float(self._burst), conn.tokens + (now - conn.refilled) * self._rate)
        conn.refilled = now
        if conn.tokens >= 1.0:
            conn.tokens -= 1.0
            return True
        self._counters["throttled_messages"] += 1
        return False

    async def _on_text(self, conn: Connection, text: str) -> None:
        if conn.closing:
            return
        allowed = self._take_token(conn)
        try:
            frame = protocol.parse_frame(text)
        except FrameError as exc:
            self._send_error(conn, None, str(exc) if allowed else _RATE_LIMITED)
            return
        # Past the rate every frame is still answered, never dropped without a word: a ping
        # with its pong (the client would reconnect otherwise), a subscribe with its error.
        if frame.event == "pusher:ping":
            self._send(conn, _PONG)
        elif frame.event == "pusher:pong":
            pass
        elif frame.event == "pusher:subscribe":
            await self._subscribe(conn, frame, allowed=allowed)
        elif not allowed:
            self._send_error(conn, CloseCode.CLIENT_EVENT_REJECTED, _RATE_LIMITED)
        elif frame.event == "pusher:unsubscribe":
            self._unsubscribe(conn, frame)
        elif frame.event.startswith("client-"):
            self._send_error(conn, CloseCode.CLIENT_EVENT_REJECTED, "Client events are not enabled")
        else:
            self._send_error(conn, None, "Unsupported event")

    async def _subscribe(
        self, conn: Connection, frame: protocol.Frame, *, allowed: bool = True
    ) -> None:
        try:
            request = protocol.parse_subscribe(frame)
        except FrameError as exc:
            self._send_error(conn, None, str(exc))  # no channel to answer on
            return
        name = request.channel
        refusal = self._subscription_refusal(conn, name, request, allowed=allowed)
        if refusal is not None:
            self._counters["refused_subscriptions"] += 1
            # Echo's .error() and pusher-js's subscription_error handler see it on the channel.
            shown = name[: protocol.MAX_CHANNEL_NAME]
            self._send(conn, protocol.encode(protocol.subscription_error(shown, *refusal)))
            return
        if name in conn.channels:
            self._send(conn, protocol.encode(protocol.subscription_succeeded(name)))
            return  # already replayed on the first subscription
        conn.channels.add(name)
        self._channels.setdefault(name, set()).add(conn)
        self._send(conn, protocol.encode(protocol.subscription_succeeded(name)))
        if self.on_subscribed is None or conn.closing:
            return
        try:
            await self.on_subscribed(conn.socket_id, name)
        except Exception as exc:  # a failing hook must not take the socket down
            log_unexpected(log, f"push: subscribe hook for socket {conn.socket_id}", exc)

    def _subscription_refusal(
        self, conn: Connection, name: str, request: protocol.Subscribe, *, allowed: bool
    ) -> tuple[str, str, int] | None:
        if not allowed:
            return "LimitReached", _RATE_LIMITED, 429
        if not protocol.valid_channel_name(name):
            return "InvalidChannel", "Invalid channel name", 400
        if not protocol.is_private_channel(name):
            return "AuthError", "Only private channels are available", 403
        if name not in conn.channels and len(conn.channels) >= self._max_channels:
            return "LimitReached", f"At most {self._max_channels} channels per connection", 429
        if request.auth is None or not verify_channel(
            self._app_key,
            self._app_secret,
            conn.socket_id,
            name,
            request.auth,
            request.channel_data,
        ):
            return "AuthError", "Invalid signature", 401
        return None

    def _unsubscribe(self, conn: Connection, frame: protocol.Frame) -> None:
        try:
            request = protocol.parse_subscribe(frame)
        except FrameError as exc:
            self._send_error(conn, None, str(exc))
            return
        if request.channel in conn.channels:
            conn.channels.discard(request.channel)
            self._leave(conn, request.channel)
