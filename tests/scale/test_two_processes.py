"""Two service processes over one PostgreSQL, one Redis and one S3 server, as a site runs them.

A phone asks process A; its stock pusher-js socket is on process B. A is killed with SIGKILL
in the middle of the fetch; B takes the job over once A's lease lapses, the phone is pushed
once, and the archive downloads through B, and through A once A is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support import postgres
from tests.support.badserver import BadMediaServer, make_mp4, serve
from tests.support.phone import Record, phone_config, running_phone
from tests.support.processes import Service, worker_port
from tests.support.redis import RedisServer
from tests.support.s3 import CREDENTIALS, S3Server
from tests.support.service import rfc3339
from vms.archive.mp4check import check_mp4

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(
        not postgres.wanted(), reason="a site of processes shares PostgreSQL: the PG pass runs it"
    ),
]

PHONE = "phone-site"
X_CLIENT = "ios-cctv"
PASSWORD = "alice-password-long"
LEASE = 2.0
# What the media server answers every /get with.
CLIP_SECONDS = 4


def _generated(download_id: int) -> Callable[[Record], bool]:
    def matches(record: Record) -> bool:
        data = record["data"]
        return bool(
            data["type"] == "archive_generated" and data["data"]["download"]["id"] == download_id
        )

    return matches


@pytest.fixture
async def media() -> AsyncIterator[tuple[BadMediaServer, str]]:
    """A media server that holds each /get until released (the fetch A is killed in)."""
    server = BadMediaServer(make_mp4(seconds=CLIP_SECONDS), mode="stall")
    urls = serve(server)
    url = await anext(urls)
    yield server, url
    await urls.aclose()


@pytest.fixture
async def site(database_url: str, redis_server: RedisServer, s3_server: S3Server) -> dict[str, str]:
    """What every process of the site is configured with: the three engines and the lease."""
    bucket = await s3_server.create_bucket()
    return {
        "VMS_DATABASE_URL": database_url,
        "VMS_REDIS_URL": redis_server.url,
        "VMS_STORAGE_URL": f"s3://{bucket}/site",
        "VMS_S3_ENDPOINT": s3_server.endpoint,
        "VMS_JOB_LEASE": f"{LEASE}s",
        **CREDENTIALS,
    }


async def _json(response: aiohttp.ClientResponse, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_killed_process_loses_no_job_and_the_phone_is_pushed_once(
    node: str,
    site: dict[str, str],
    media: tuple[BadMediaServer, str],
    tmp_path: Path,
) -> None:
    """Ask A, socket on B, kill -9 A mid-fetch: B finishes, one push, both serve the file."""
    server, media_url = media
    port_a, port_b = worker_port(), worker_port()
    # One public address for the site (a balancer's); here it leads to B.
    env = {**site, "VMS_PUBLIC_URL": f"http://127.0.0.1:{port_b}"}
    a = Service(tmp_path / "a", port_a, **env)
    b = Service(tmp_path / "b", port_b, **env)
    a.log, b.log = tmp_path / "a.log", tmp_path / "b.log"
    a.cli("camera", "add", "1", "--name", "Gate", "--media-server", media_url)
    a.cli("user", "add", "alice", "--password", PASSWORD, "--camera", "1")
    await a.start()
    conn = await asyncpg.connect(site["VMS_DATABASE_URL"])
    try:
        async with aiohttp.ClientSession() as http:
            device_headers = {"X-Client": X_CLIENT, "X-UUID": PHONE}
            answer = await _json(
                await http.post(
                    f"http://127.0.0.1:{port_a}/api/v1/token",
                    json={"login": "alice", "password": PASSWORD},
                    headers=device_headers,
                )
            )
            bearer = {**device_headers, "Authorization": f"Bearer {answer['access_token']}"}
            now = datetime.now(UTC).replace(microsecond=0)
            asked = await _json(
                await http.get(
                    f"http://127.0.0.1:{port_a}/api/v1/cameras/1/archive/link",
                    params={
                        "from": rfc3339(now - timedelta(minutes=10)),
                        "to": rfc3339(now - timedelta(minutes=9)),
                    },
                    headers=bearer,
                ),
                202,
            )
            download_id = asked["download"]["id"]

            async def a_fetching() -> bool:
                holder = await conn.fetchval(
                    "SELECT claimed_by FROM downloads WHERE id = $1", download_id
                )
                return server.get_requests >= 1 and f":{a.pid}:" in f":{holder}:"

            await _until(a_fetching, "A never claimed and started the fetch")

            # B starts only now, so the job is surely A's; the phone's socket goes to B.
            await b.start()
            wsurl = await _json(
                await http.get(f"http://127.0.0.1:{port_b}/api/v1/wsurl", headers=device_headers)
            )
            assert wsurl["port"] == port_b
            config = phone_config(
                wsurl,
                f"http://127.0.0.1:{port_b}/broadcasting/auth",
                answer,
                PHONE,
                X_CLIENT,
                tmp_path / "from-node.mp4",
            )
            async with running_phone(node, config, tmp_path) as device:
                assert a.kill(signal.SIGKILL) == -signal.SIGKILL
                server.mode = "ok"
                server.release.set()
                pushed = await device.next("pusher", "event", _generated(download_id), 30)
                download = pushed["data"]["data"]["download"]
                assert download["status"] == "ready" and pushed["data"]["status"] == "ok"
                fetched = await device.next("pusher", "download")
                assert fetched["status"] == 200 and fetched["contentType"] == "video/mp4"
                assert abs(check_mp4(device.saved) - CLIP_SECONDS) <= 1
                # Well past another lease: nobody works the job again or pushes it twice.
                await asyncio.sleep(LEASE * 2)
                assert await device.quit() == 0
            pushes = [r for r in device.seen if r["type"] == "event" and _generated(download_id)(r)]
            assert sorted(r["client"] for r in pushes) == ["echo", "pusher"]
            row = await conn.fetchrow(
                "SELECT status, attempts, claimed_by FROM downloads WHERE id = $1", download_id
            )
            assert row["status"] == "ready" and f":{b.pid}:" in f":{row['claimed_by']}:"
            digest = hashlib.sha256(device.saved.read_bytes()).hexdigest()

            # A comes back: the same signed URL downloads the same bytes through either.
            await a.start()
            path = download["url"].removeprefix(f"http://127.0.0.1:{port_b}")
            for port in (port_a, port_b):
                async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == 200, port
                    assert hashlib.sha256(await response.read()).hexdigest() == digest
    finally:
        await conn.close()
        for service in (a, b):
            if service.process is not None and service.process.poll() is None:
                service.kill(signal.SIGTERM)
