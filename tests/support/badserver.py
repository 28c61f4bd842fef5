"""A real media server on loopback that misbehaves on demand, for fault tests."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import tempfile
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
from aiohttp import web

MODES = ("ok", "error500", "stall", "truncated", "garbage", "trickle", "flaky", "notfound")


def make_mp4(seconds: int = 4, fps: int = 10) -> bytes:
    """A whole faststart MP4 of H.264 noise (a few hundred KB) made by PyAV."""
    # faststart rewrites the file at the end, so it needs a real file, not a buffer.
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "clip.mp4"
        _encode(path, seconds, fps)
        return path.read_bytes()


def _encode(path: Path, seconds: int, fps: int) -> None:
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index in range(seconds * fps):
            frame = av.VideoFrame(160, 96, "yuv420p")
            noise = random.Random(index)  # noise does not compress: a file of some size
            for plane in frame.planes:
                plane.update(noise.randbytes(plane.buffer_size))
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@dataclasses.dataclass
class BadMediaServer:
    """State of the misbehaving server: the mode, the body, and how often /get was asked."""

    body: bytes
    mode: str = "ok"
    get_requests: int = 0
    # In mode "flaky", this many /get requests fail with 503 before one succeeds.
    failures_before_success: int = 1
    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # What /list answers: (start, seconds) entries; None: one day up to now.
    listing: list[tuple[datetime, float]] | None = None

    def app(self) -> web.Application:
        """The aiohttp application answering /list and /get."""
        app = web.Application()
        app.router.add_get("/list", self._list)
        app.router.add_get("/get", self._get)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        entries = self.listing or [(datetime.now(UTC) - timedelta(days=1), 86400.0)]
        return web.json_response(
            [
                {"start": _rfc3339(start), "duration": seconds, "url": ""}
                for start, seconds in entries
            ]
        )

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.get_requests += 1
        mode = self.mode
        if mode == "flaky":
            mode = "error500" if self.get_requests <= self.failures_before_success else "ok"
        if mode == "error500":
            return web.json_response({"status": "error", "error": "boom"}, status=500)
        if mode == "notfound":
            return web.json_response(
                {"status": "error", "error": "no recordings found"}, status=404
            )
        if mode == "garbage":
            return web.Response(body=b"\x00garbage" * 4096, content_type="video/mp4")
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(self.body)
        await response.prepare(request)
        if mode == "ok":
            await response.write(self.body)
            await response.write_eof()
        elif mode == "truncated":
            await response.write(self.body[: len(self.body) // 2])
            request.transport.close() if request.transport else None
        elif mode == "stall":
            # Held after the first bytes until `release`, then sent to the end: a released
            # fetch goes on at once instead of waiting out its read timeout.
            await response.write(self.body[:1000])
            await self.release.wait()
            await response.write(self.body[1000:])
            await response.write_eof()
        elif mode == "trickle":
            for offset in range(0, len(self.body), 64):
                await response.write(self.body[offset : offset + 64])
                await asyncio.sleep(0.05)
            await response.write_eof()
        return response


async def serve(server: BadMediaServer, port: int = 0) -> AsyncGenerator[str, None]:
    """Run `server` on 127.0.0.1:`port` until the generator is closed; yields its URL.

    Port 0 lets the kernel pick one, so parallel test workers can never collide.
    """
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.release.set()
        await runner.cleanup()


class StopAtGap:
    """A real proxy before a media server whose /get stops at the first gap, as MediaMTX's does.

    /list is passed on; /get asks the upstream's /list and serves only the recorded span the
    start falls in (404 for a start inside a gap), however long the duration asked for.
    `gets` holds each distinct (start, duration) served.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.gets: set[tuple[str, float]] = set()

    def app(self) -> web.Application:
        """The proxy's application."""
        app = web.Application()
        app.router.add_get("/list", self._list)
        app.router.add_get("/get", self._get)
        app.cleanup_ctx.append(self._session)
        return app

    async def _session(self, app: web.Application) -> AsyncGenerator[None, None]:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            self._http = session
            yield

    def _headers(self, request: web.Request) -> dict[str, str]:
        return {"Authorization": request.headers.get("Authorization", "")}

    async def _list(self, request: web.Request) -> web.Response:
        async with self._http.get(
            f"{self.upstream}/list", params=request.query, headers=self._headers(request)
        ) as upstream:
            return web.Response(
                status=upstream.status, body=await upstream.read(), content_type="application/json"
            )

    async def _get(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        start = datetime.fromisoformat(query["start"].replace("Z", "+00:00"))
        end = start + timedelta(seconds=float(query["duration"]))
        listing = {"path": query["path"], "start": query["start"], "end": _rfc3339(end)}
        listing.update({k: query[k] for k in ("jwt", "token") if k in query})
        async with self._http.get(
            f"{self.upstream}/list", params=listing, headers=self._headers(request)
        ) as upstream:
            entries = await upstream.json() if upstream.status == 200 else []
        stop = None
        for entry in entries:
            begin = datetime.fromisoformat(entry["start"].replace("Z", "+00:00"))
            if begin <= start < begin + timedelta(seconds=entry["duration"]):
                stop = min(end, begin + timedelta(seconds=entry["duration"]))
        if stop is None:
            return web.json_response(
                {"status": "error", "error": "no recordings found"}, status=404
            )
        query["duration"] = f"{(stop - start).total_seconds():.6f}"
        self.gets.add((query["start"], float(query["duration"])))
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        async with self._http.get(
            f"{self.upstream}/get", params=query, headers=self._headers(request)
        ) as upstream:
            if upstream.status != 200:
                return web.Response(status=upstream.status, body=await upstream.read())
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
        return response


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
