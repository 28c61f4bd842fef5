"""What counting every request for /metrics costs: the same tiny handler with and without
the middleware, in alternating rounds on one loop; prints requests/s and the ratio.

    python bench/metrics.py [--requests 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import free_port
from vms.metrics import Metrics
from vms.monitoring import METRICS, count_requests

PORT = 57050  # benchmarks on this machine keep to 57000..57499


async def _ping(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _app(counted: bool) -> web.Application:
    app = web.Application(middlewares=[count_requests] if counted else [])
    app[METRICS] = Metrics()
    app.router.add_get("/items/{id}", _ping)
    return app


async def _round(counted: bool, requests: int, port: int) -> float:
    runner = web.AppRunner(_app(counted), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        connector = aiohttp.TCPConnector(limit=10)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def worker(count: int) -> None:
                for n in range(count):
                    async with http.get(f"http://127.0.0.1:{port}/items/{n}") as response:
                        await response.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker(requests // 10) for _ in range(10)))
            return requests / (time.perf_counter() - started)
    finally:
        await runner.cleanup()


async def main(requests: int, rounds: int) -> None:
    """Alternate plain and counted rounds; print the medians and their ratio."""
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for counted in (False, True):
            results[counted].append(await _round(counted, requests, free_port(PORT)))
    plain, with_counts = (statistics.median(results[k]) for k in (False, True))
    print(f"without the middleware: {plain:,.0f} requests/s (median of {rounds})")
    print(f"with the middleware:    {with_counts:,.0f} requests/s")
    print(f"ratio counted/plain:    {with_counts / plain:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
