"""Listening ports that idle or slow clients cannot exhaust: timeouts, a cap, the file limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from vms.config import Config
from vms.logs import throttle_library_floods
from vms.notify import keep_watchdog_fed, notify, watchdog_interval

log = logging.getLogger(__name__)

# asyncio accepts up to the listen backlog in one loop pass before it can close any of the
# sockets, so each port may briefly hold this many descriptors beyond its cap.
BACKLOG = 128
REPORT_INTERVAL = 60.0


@dataclass(frozen=True)
class Limits:
    """What one listening port allows: seconds to send headers and to idle, connections at once."""

    header_timeout: float
    idle_timeout: float
    # 0: this port's share of the open-file limit; otherwise at most that share.
    max_connections: int
    # Listening ports in this process, which share its open-file limit.
    ports: int

    @classmethod
    def of(cls, config: Config, ports: int) -> Limits:
        """The limits `config` sets for each of `ports` listeners in one process."""
        return cls(config.header_timeout, config.idle_timeout, config.max_connections, ports)

    def cap(self, open_files: int) -> int:
        """Connections one port may hold so that all ports together stay under `open_files`."""
        share = connection_share(open_files, self.ports)
        return min(self.max_connections, share) if self.max_connections else share


def connection_share(open_files: int, ports: int) -> int:
    """One of `ports` listeners' share of `open_files`, after room for files, the database
    and outgoing sockets, and for the descriptors of an accept burst."""
    reserve = max(64, open_files // 8)
    return max(1, (open_files - reserve - ports * BACKLOG) // ports)


def open_file_limit() -> int:
    """The process's current (soft) limit on open file descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one where the system allows; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still has a kernel ceiling (nr_open), so ask for a finite one.
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning(
                "open-file limit stays at %s: cannot raise it to %s (%s)", soft, target, exc
            )
        else:
            log.info("open-file limit raised from %s to %s", soft, target)
    return open_file_limit()


class _Guard:
    """One runner's open connections; at the cap it sheds connections and says so once a minute.

    A new connection past the cap replaces the oldest one still silent about its request,
    so a pile of idle sockets cannot lock real clients out; with none silent it is refused.
    """

    def __init__(self, limits: Limits, cap: int, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.cap = cap
        self.open = 0
        # Connections whose request headers are due, oldest first.
        self.waiting: dict[_GuardedHandler, None] = {}
        self._clock = clock
        self._shed = 0
        self._next_report = float("-inf")

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection in, or False if the cap is reached and none can make room."""
        if self.open < self.cap:
            self.open += 1
            return True
        self._report(transport)
        if self.waiting:
            # Counted out when its connection is lost, a moment from now.
            next(iter(self.waiting)).force_close()
            self.open += 1
            return True
        return False

    def release(self) -> None:
        """Count a connection out."""
        self.open -= 1

    def _report(self, transport: asyncio.BaseTransport) -> None:
        self._shed += 1
        now = self._clock()
        if now < self._next_report:
            return
        sockname = transport.get_extra_info("sockname")
        port = sockname[1] if isinstance(sockname, tuple) else sockname
        log.warning(
            "port %s: at its cap of %s connections, closing the longest silent ones and"
            " refusing the rest (%s since the last report, which is at most once a minute)",
            port,
            self.cap,
            self._shed,
        )
        self._shed = 0
        self._next_report = now + REPORT_INTERVAL


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol with a header timeout, counted against its runner's cap.

    aiohttp has only the keep-alive timer, which runs from the previous response, so a
    client that trickles header bytes holds its socket for the whole keep-alive time.
    This reads aiohttp's `_waiter` (set while waiting for the next request) and
    `_request_count` (bumped when a request's headers are parsed) the way its own
    keep-alive check does.
    """

    __slots__ = ("_admitted", "_guard", "_header_mark", "_header_timer")

    def __init__(self, manager: web.Server, guard: _Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._header_mark = 0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse the connection past the cap; otherwise serve it, headers due shortly."""
        if not self._guard.admit(transport):
            # abort(), not close(): nothing to flush, and the descriptor goes back at once.
            cast(asyncio.Transport, transport).abort()
            return
        self._admitted = True
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp's parser; the first bytes of a request start its header timer."""
        super().data_received(data)
        if self._header_timer is not None:
            if self._request_count != self._header_mark:
                self._headers_arrived()
        elif self._waiter is not None and not self._waiter.done():
            # Bytes while idle between requests and still no whole head: a request has begun.
            # During a handler (a body, a WebSocket) `_waiter` is None and no timer runs.
            self._await_headers()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Count the connection out and let aiohttp clean up."""
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release()
        self._headers_arrived()
        super().connection_lost(exc)

    def force_close(self) -> None:
        """Close now; no longer a candidate to make room."""
        self._headers_arrived()
        super().force_close()

    def _await_headers(self) -> None:
        self._header_mark = self._request_count
        self._header_timer = self._loop.call_later(
            self._guard.limits.header_timeout, self._headers_late
        )
        self._guard.waiting[self] = None

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._guard.waiting.pop(self, None)

    def _headers_late(self) -> None:
        log.debug("closing a connection whose request headers did not arrive in time")
        self.force_close()


class _GuardedServer(web.Server):
    """aiohttp's Server making guarded protocols, with the settings of the Server it copies."""

    def __init__(self, plain: web.Server, guard: _Guard) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )
        self.guard = guard

    def __call__(self) -> RequestHandler:
        """A protocol for one accepted connection."""
        return _GuardedHandler(self, self.guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections have the header and idle timeouts and the cap of `limits`.

    The cap is taken from the open-file limit at setup, so raise that first.
    """

    __slots__ = ("_clock", "_limits")

    def __init__(
        self,
        app: web.Application,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._limits = limits
        self._clock = clock
        throttle_library_floods()

    @property
    def limits(self) -> Limits:
        """The limits this runner was made with."""
        return self._limits

    @property
    def cap(self) -> int:
        """Connections this runner serves at once (after setup)."""
        assert isinstance(self.server, _GuardedServer)
        return self.server.guard.cap

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        guard = _Guard(self._limits, self._limits.cap(open_file_limit()), self._clock)
        return _GuardedServer(plain, guard)


async def start_site(
    runner: GuardedRunner,
    host: str,
    port: int,
    *,
    sockets: Sequence[socket.socket] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> list[web.BaseSite]:
    """Serve `runner` (set up) on `sockets` bound before, or else listen on host:port (over
    TLS with `ssl_context`); log the port's limits."""
    sites: list[web.BaseSite] = [
        web.SockSite(runner, sock, ssl_context=ssl_context, backlog=BACKLOG) for sock in sockets
    ]
    if not sites:
        sites.append(web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=BACKLOG))
    for site in sites:
        await site.start()
        _log_limits(runner, site)
    return sites


def _log_limits(runner: GuardedRunner, site: web.BaseSite) -> None:
    limits = runner.limits
    log.info(
        "%s: request headers within %gs, idle connections closed after %gs, at most %s at once",
        site.name,
        limits.header_timeout,
        limits.idle_timeout,
        runner.cap,
    )


def serve(
    app: web.Application,
    config: Config,
    sockets: Sequence[socket.socket] = (),
    ssl_context: ssl.SSLContext | None = None,
    **runner_kwargs: Any,
) -> None:
    """Serve `app` on `sockets` (or config.host:config.port) until SIGTERM or SIGINT, as
    web.run_app would."""
    raise_open_file_limit()
    asyncio.run(_serve(app, config, sockets, ssl_context, runner_kwargs))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (where signals can be handled)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        yield stop
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _serve(
    app: web.Application,
    config: Config,
    sockets: Sequence[socket.socket],
    ssl_context: ssl.SSLContext | None,
    runner_kwargs: dict[str, Any],
) -> None:
    ports = 2 if config.media_port else 1
    with stop_on_signals() as stop:
        runner = GuardedRunner(app, Limits.of(config, ports), **runner_kwargs)
        watchdog: asyncio.Task[None] | None = None
        try:
            await runner.setup()
        except BaseException:  # what started before the failure (the database) is closed
            await runner.cleanup()
            raise
        try:
            sites = await start_site(
                runner, config.host, config.port, sockets=sockets, ssl_context=ssl_context
            )
            for site in sites:
                log.info("======== Running on %s ========", site.name)
            notify("READY=1\nSTATUS=serving")
            interval = watchdog_interval()
            if interval is not None:
                watchdog = asyncio.create_task(keep_watchdog_fed(interval), name="watchdog")
            await stop.wait()
            notify("STOPPING=1")
            log.info("stopping: closing sockets, letting downloads resume at the next start")
        finally:
            if watchdog is not None:
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
            await runner.cleanup()
        log.info("stopped")
