"""One push socket's state: its channels, its bounded queue of frames, and how it closes."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from vms.push import protocol


@dataclass(frozen=True, slots=True)
class Close:
    """Queued after the last frame: the writer closes the socket with this code."""

    code: int
    message: str


class Connection:
    """One socket's state; only the hub's reader and this socket's writer task touch it."""

    # Slots, and a queue, writer task and end future that exist only while needed: at 10,000
    # sockets every object per socket lengthens each full garbage collection.
    __slots__ = (
        "_ended",
        "_queue",
        "awaiting_pong",
        "channels",
        "closing",
        "ended",
        "high_water",
        "refilled",
        "sending_since",
        "sessions",
        "socket_id",
        "stopped",
        "tokens",
        "transport",
        "writer",
        "ws",
    )

    def __init__(
        self,
        socket_id: str,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        burst: int,
        now: float,
    ) -> None:
        self.socket_id = socket_id
        self.ws = ws
        self.transport = transport
        # Above this many buffered bytes asyncio has paused the transport: queue, don't write.
        self.high_water = transport.get_write_buffer_limits()[1] if transport else 0
        self.channels: set[str] = set()
        self.sessions: set[str] = set()
        self.closing = False  # a close is queued or the peer is gone: nothing more is accepted
        self.stopped = False  # the reader is done: the writer quits at once
        self.awaiting_pong = False
        self.tokens = float(burst)
        self.refilled = now
        self.writer: asyncio.Task[None] | None = None  # only while frames are backed up
        self.sending_since: float | None = None  # the writer is in a send since then
        self.ended = False
        self._ended: asyncio.Future[None] | None = None
        self._queue: deque[protocol.Outgoing | Close] | None = None

    @property
    def queued(self) -> int:
        """Frames waiting for the writer."""
        return len(self._queue) if self._queue else 0

    def push(self, item: protocol.Outgoing | Close) -> None:
        """Queue a frame or the close for the writer; the caller has checked the bound."""
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)

    def pop(self) -> protocol.Outgoing | Close | None:
        """The next frame or close for the writer, or None when there is none or it stopped."""
        if self.stopped or not self._queue:
            self._queue = None
            return None
        return self._queue.popleft()

    def drop_queued(self) -> None:
        """Forget every queued frame."""
        self._queue = None

    def close(self, code: int, message: str, *, notify: bool, drop_queued: bool = False) -> bool:
        """Queue a close (after a `pusher:error` when `notify`); False if one was queued before."""
        if self.closing:
            return False
        self.closing = True
        if drop_queued:
            self._queue = None
        if notify:
            self.push(protocol.encode(protocol.error(code, message)))
        self.push(Close(code, message))
        return True

    def stop(self) -> None:
        """The peer is gone: the writer drops what is queued and ends."""
        self.stopped = True
        self._queue = None

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a peer that does not read)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def end(self) -> None:
        """The handler is done with this socket: wake whoever waits for it."""
        self.ended = True
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    async def wait_ended(self) -> None:
        """Return once the handler is done with this socket."""
        if self.ended:
            return
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended)
