"""Minimal servers the benchmarks measure the service against, each run as its own process.

Usage: python bench/servers.py hello PORT      a hello-world JSON handler (bench/api_link.py)
       python bench/servers.py bare PORT PAD   bare aiohttp WebSockets (bench/push.py)
       python bench/servers.py hub PORT PAD    the service's Hub alone (bench/push.py)

`bare`: POST /publish?round=N[&style=write] sends every socket one frame padded with PAD
bytes; `style=write` is the floor: one encoding, one transport.write per socket.
`hub`: every socket subscribes to one private channel; POST /publish?round=N is one
`hub.publish` padded with PAD bytes, answered once every writer task has drained.
Both push servers also serve GET /gc (full GC pauses) and GET /objects (GC-tracked objects).
"""

from __future__ import annotations

import asyncio
import gc
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
PAD = web.AppKey("pad", int)
KEY, SECRET, CHANNEL = "bench-key", "bench-secret", "private-token.bench"
EVENT = "App\\Events\\TokenPush"


# hello


async def hello(request: web.Request) -> web.Response:
    """The smallest JSON answer aiohttp gives."""
    return web.json_response({"link": "hello"})


def hello_app() -> web.Application:
    """GET / answers a constant JSON object."""
    app = web.Application()
    app.router.add_get("/", hello)
    return app


# The GC probe of both push servers

# (wall-clock time, milliseconds) of every full (generation 2) collection: they stop the loop.
pauses: list[tuple[float, float]] = []
_gc_started = [0.0]


def _gc_watch(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    elif info["generation"] == 2:
        pauses.append((time.time(), (time.perf_counter() - _gc_started[0]) * 1000))


async def gc_pauses(request: web.Request) -> web.Response:
    """The full collections between ?since= and ?until= (wall-clock seconds), in ms."""
    since, until = float(request.query["since"]), float(request.query.get("until", "inf"))
    return web.json_response([ms for at, ms in pauses if since <= at < until])


async def objects(request: web.Request) -> web.Response:
    """How many objects the GC tracks after a full collection."""
    gc.collect()
    return web.json_response(len(gc.get_objects()))


def push_app(pad: int) -> web.Application:
    """An app with the GC probe and the frame padding both push servers use."""
    gc.callbacks.append(_gc_watch)
    app = web.Application()
    app[PAD] = pad
    app.router.add_get("/gc", gc_pauses)
    app.router.add_get("/objects", objects)
    return app


# bare: sockets in a dict, one send_str each

SOCKETS = web.AppKey("sockets", dict[web.WebSocketResponse, asyncio.Transport | None])


async def bare_socket(request: web.Request) -> web.WebSocketResponse:
    """Hold the socket until the client goes; say hello first."""
    sockets = request.app[SOCKETS]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sockets[ws] = request.transport
    try:
        await ws.send_str('{"event":"hello","data":"{}"}')
        async for _ in ws:
            pass
    finally:
        sockets.pop(ws, None)
    return ws


async def bare_publish(request: web.Request) -> web.Response:
    """One frame to every socket; how many and how long it took, in ms."""
    sockets = request.app[SOCKETS]
    started = time.time()
    style = request.query.get("style", "send_str")
    pad = "x" * request.app[PAD]
    data = {"round": int(request.query["round"]), "t": started, "style": style, "pad": pad}
    frame = json.dumps({"event": "bench", "channel": "bench", "data": json.dumps(data)})
    if style == "write":
        payload = frame.encode()
        wire = struct.pack("!BBH", 0x81, 126, len(payload)) + payload
        for transport in list(sockets.values()):
            if transport is not None:
                transport.write(wire)
    else:
        for ws in list(sockets):
            await ws.send_str(frame)
    return web.json_response({"sent": len(sockets), "ms": (time.time() - started) * 1000})


def bare_app(pad: int) -> web.Application:
    """GET /ws and POST /publish."""
    app = push_app(pad)
    app[SOCKETS] = {}
    app.router.add_get("/ws", bare_socket)
    app.router.add_post("/publish", bare_publish)
    return app


# hub: the service's Hub alone, with a signing auth route


def hub_app(pad: int) -> web.Application:
    """GET /ws/app/{key}, POST /broadcasting/auth and POST /publish around one Hub."""
    # Imported here so the bare and hello processes carry none of the service's modules.
    sys.path.insert(0, str(ROOT))
    from vms.push.hub import Hub
    from vms.push.signing import sign_channel

    hub = Hub(KEY, SECRET)

    async def auth(request: web.Request) -> web.Response:
        form = await request.post()
        socket_id = str(form["socket_id"])
        hub.bind_session(socket_id, "bench")
        return web.json_response({"auth": sign_channel(KEY, SECRET, socket_id, CHANNEL)})

    async def publish(request: web.Request) -> web.Response:
        queued = hub.stats.get("queued_sends", 0)
        started = time.time()
        data = {"type": "bench", "round": int(request.query["round"]), "t": started}
        data["pad"] = "x" * request.app[PAD]
        sent = hub.publish(CHANNEL, EVENT, data)
        # A writer task lives only while its socket has frames queued; the Hub has no event
        # for "all drained", so poll its task count at a 2 ms grain.
        while hub.task_count:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        ms = (time.time() - started) * 1000
        queued = hub.stats.get("queued_sends", 0) - queued
        return web.json_response({"sent": sent, "ms": ms, "queued": queued})

    async def close(app: web.Application) -> None:
        await hub.close_all()

    app = push_app(pad)
    app.router.add_get("/ws/app/{app_key}", hub.handle)
    app.router.add_post("/broadcasting/auth", auth)
    app.router.add_post("/publish", publish)
    app.on_shutdown.append(close)
    return app


def main() -> None:
    """Run the server named on the command line."""
    match sys.argv[1:]:
        case ["hello", port]:
            app = hello_app()
        case ["bare", port, pad]:
            app = bare_app(int(pad))
        case ["hub", port, pad]:
            app = hub_app(int(pad))
        case _:
            raise SystemExit(__doc__)
    web.run_app(app, host="127.0.0.1", port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
