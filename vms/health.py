"""Is the service alive, and ready for work? `/healthz` and `/readyz` for probes and operators."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from vms import appkeys
from vms.archive.fetcher import free_bytes

# Set once the service has begun to stop: probes should send traffic elsewhere.
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the process answers at all."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readiness(app: web.Application) -> dict[str, dict[str, Any]]:
    """Each check with `ok` and what was seen: the database, archive disk space, shutdown."""
    config = app[appkeys.CONFIG]
    checks: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(2):
            await app[appkeys.DB].schema_version()
        checks["database"] = {"ok": True}
    except Exception as exc:  # a failing check is the answer, not an error of this handler
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    loop = asyncio.get_running_loop()
    try:
        config.archives_dir.mkdir(parents=True, exist_ok=True)
        free = await loop.run_in_executor(None, free_bytes, config.archives_dir)
        checks["disk"] = {"ok": free >= config.min_free_disk, "free_bytes": free,
                          "min_free_bytes": config.min_free_disk}  # fmt: skip
    except OSError as exc:
        checks["disk"] = {"ok": False, "error": exc.strerror or type(exc).__name__}
    checks["shutting_down"] = {"ok": not app[SHUTTING_DOWN].is_set()}
    return checks


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 `ready` with the checks, or 503 naming the failing ones."""
    checks = await readiness(request.app)
    ready = all(check["ok"] for check in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
