"""The thick link and push fan-out on one process and on two, against SQLite alone, in one run.

Usage: python bench/scale.py [--seconds 8] [--connections 64] [--sockets 2000] [--rounds 3]

Starts, for this run only, Debian's PostgreSQL and redis-server on 127.0.0.1 (temporary
directories, ports from 57000 up), then three set-ups in turn, each on fresh state:
1. `sqlite`: one process on the embedded defaults, the baseline;
2. `shared x1`: one process on PostgreSQL and Redis;
3. `shared x2`: two processes on PostgreSQL and Redis on one port (SO_REUSEPORT): the kernel
   spreads wrk's connections and the push sockets over both, and a job's push reaches the
   sockets of the other process through Redis.
In each: wrk on the thick link for `--seconds` (req/s, p99), then `--sockets` Pusher sockets
subscribed to one phone session's channel (held by two client processes, bench/push.py's),
then `--rounds` real archive jobs, each pushing `archive_progress` and `archive_generated` to
every socket: p50/p99 from the job's recorded state to receipt. Archives stay on the local
disk of the process that made them (storage is not what this measures). Prints the table
with ratios against `sqlite`. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from api_link import wrk
from common import BENCH_PASSWORD as PASSWORD
from common import Service, api, free_port, require_tools, small_footage
from push import Clients, split, summary

from tests.support.postgres import Databases, PostgresServer, binaries
from tests.support.redis import RedisServer, redis_binary

DEVICE = "bench-phone"
PORTS = 57000


@dataclass
class Result:
    """What one set-up measured."""

    name: str
    link_rate: float
    link_p99: float
    push: dict[str, float]


@dataclass
class Engines:
    """The shared engines of the run."""

    databases: Databases
    redis: RedisServer
    stack: contextlib.ExitStack

    def database(self) -> str:
        """A new migrated database's URL, dropped at the end of the run."""
        return self.stack.enter_context(self.databases.fresh())


@contextlib.contextmanager
def engines(work: Path) -> Iterator[Engines]:
    """PostgreSQL and Redis for the run, stopped by PID at its end."""
    bin_dir, redis = binaries(), redis_binary()
    if bin_dir is None or redis is None:
        raise SystemExit("needs Debian's postgresql and redis-server (scripts/setup.sh test)")
    postgres = PostgresServer(bin_dir, free_port(PORTS))
    (work / "redis").mkdir()
    cache = RedisServer(redis, work / "redis")
    try:
        postgres.start()
        cache.start()
        databases = Databases(postgres)
        with contextlib.ExitStack() as stack:
            stack.callback(databases.close)
            yield Engines(databases, cache, stack)
    finally:
        cache.stop()
        postgres.stop()


def start_site(
    work: Path, name: str, processes: int, shared: dict[str, str]
) -> tuple[list[Service], int, datetime]:
    """`processes` services on one port (the first with the embedded media server)."""
    port, media_port = free_port(PORTS + 100), free_port(PORTS + 200)
    services = []
    start = datetime.now()
    for index in range(processes):
        data = work / f"{name}-{index}"
        env = {**shared, "VMS_MEDIA_PORT": str(media_port) if index == 0 else "0"}
        service = Service(data, port, **env)
        if index == 0:
            start = small_footage(data, 8)
            service.cli(
                "camera", "add", "1", "--name", "Gate", "--path", "camera1",
                "--media-server", f"http://127.0.0.1:{media_port}",
            )  # fmt: skip
            service.cli("user", "add", "bench", "--password", PASSWORD, "--admin")
        service.log = work / f"{name}-{index}.log"
        service.start_blocking()
        services.append(service)
    return services, port, start


def measure_link(port: int, start: datetime, args: argparse.Namespace) -> tuple[float, float]:
    """wrk on the thick link: req/s and p99 ms."""
    answer = api(
        port, "POST", "/api/v1/token", None, {"login": "bench", "password": PASSWORD},
        device="desk", client="thick-legal",
    )  # fmt: skip
    frm = (start + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to = (start + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        "Authorization": f"Bearer {answer['access_token']}",
        "X-Client": "thick-legal",
        "X-UUID": "desk",
    }
    url = f"http://127.0.0.1:{port}/api/v1/cameras/1/archive/link?from={frm}&to={to}"
    wrk(url, 2, args.connections, headers)  # warm up
    return wrk(url, args.seconds, args.connections, headers)


def measure_push(port: int, start: datetime, args: argparse.Namespace) -> dict[str, float]:
    """Sockets on the port, `rounds` archive jobs; latency of archive_generated to all."""
    answer = api(
        port, "POST", "/api/v1/token", None, {"login": "bench", "password": PASSWORD},
        device=DEVICE,
    )  # fmt: skip
    token, session = answer["access_token"], answer["user"]["access_token_id"]
    wsurl = api(port, "GET", "/api/v1/wsurl", None, device=DEVICE)
    spec: dict[str, Any] = {
        "mode": "service",
        "client": "raw",
        "offer_deflate": False,
        "ws_url": f"http://127.0.0.1:{port}/ws/app/{wsurl['app_key']}?protocol=7&client=py",
        "auth_url": f"http://127.0.0.1:{port}/broadcasting/auth",
        "channel": f"private-token.{session}",
        "headers": {"Authorization": f"Bearer {token}", "X-Client": "ios-cctv", "X-UUID": DEVICE},
    }
    clients = Clients([{**spec, "count": n} for n in split(args.sockets, 2)])
    try:
        opened = clients.wait_ready()
        assert opened == args.sockets
        for index in range(args.rounds):
            moment = start + timedelta(seconds=30 + 20 * index)
            query = (
                f"from={moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                f"&to={(moment + timedelta(seconds=15)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            )
            asked = api(
                port, "GET", f"/api/v1/cameras/1/archive/link?{query}", token, device=DEVICE
            )
            download_id = asked["download"]["id"]
            deadline = time.monotonic() + 60
            while True:
                got = api(port, "GET", f"/api/v1/downloads/{download_id}", token, device=DEVICE)
                if got["data"]["status"] in ("ready", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("an archive job did not finish in 60 s")
                time.sleep(0.05)
            if got["data"]["status"] != "ready":
                raise SystemExit(f"an archive job failed: {json.dumps(got)}")
            time.sleep(1.0)
        return summary(clients.report(), "archive_generated", args.sockets)
    finally:
        clients.kill()


def run(
    work: Path, name: str, processes: int, shared: dict[str, str], args: argparse.Namespace
) -> Result:
    """One set-up from start to stop."""
    services, port, start = start_site(work, name, processes, shared)
    try:
        rate, p99 = measure_link(port, start, args)
        push = measure_push(port, start, args)
    finally:
        for service in services:
            service.kill(signal.SIGTERM)
    return Result(name, rate, p99, push)


def main() -> None:
    """Measure the three set-ups and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    require_tools("wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results = []
    with engines(work) as shared_engines:
        results.append(run(work, "sqlite", 1, {}, args))
        for name, processes in (("shared x1", 1), ("shared x2", 2)):
            env = {
                "VMS_DATABASE_URL": shared_engines.database(),
                "VMS_REDIS_URL": shared_engines.redis.url,
            }
            results.append(run(work, name, processes, env, args))
    base = results[0]
    print(f"{args.sockets} sockets, {args.rounds} jobs, wrk -c{args.connections} {args.seconds}s")
    print("| set-up | thick link req/s | p99 ms | push p50 ms | push p99 ms | req/s vs sqlite |")
    print("| --- | --- | --- | --- | --- | --- |")
    for result in results:
        print(
            f"| {result.name} | {result.link_rate:,.0f} | {result.link_p99:.1f} "
            f"| {result.push['p50']:.1f} | {result.push['p99']:.1f} "
            f"| {result.link_rate / base.link_rate:.2f}x |"
        )


if __name__ == "__main__":
    main()
