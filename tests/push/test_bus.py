"""Push and throttles across processes: two services in one test process over a real Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer

from tests.support.phone import phone_config, running_phone
from tests.support.processes import ROOT, worker_port
from tests.support.pusher import PusherClient
from tests.support.redis import RedisServer
from tests.support.service import (
    PASSWORD,
    PHONE,
    Client,
    Footage,
    archive_range,
    ask_archive,
    bearer,
    login,
    ready_archive,
)
from vms import appkeys
from vms.app import create_app
from vms.config import Config
from vms.preflight import StartupError
from vms.push.bus import channel_name

Pair = tuple[Client, Client]
EVENT = "App\\Events\\TokenPush"
E2E_PHONE = "phone-e2e"


def _generated(record: dict[str, Any]) -> bool:
    return bool(record["data"]["type"] == "archive_generated")


async def phone_login(client: Client) -> dict[str, Any]:
    """A phone's login answer, through `client`."""
    return await login(client, device=PHONE, x_client="ios-cctv")


async def no_more(pusher: PusherClient, kind: str, wait: float = 1.0) -> None:
    """No further TokenPush of `kind` arrives within `wait` seconds."""
    with pytest.raises(TimeoutError):
        await pusher.archive_event(kind, timeout=wait)


async def closed_with(pusher: PusherClient, wait: float = 10.0) -> int | None:
    """Read until the server closes the socket; its close code."""
    async with asyncio.timeout(wait):
        while True:
            message = await pusher.ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return pusher.ws.close_code


async def subscribers(url: str, app_key: str) -> int:
    """How many processes are subscribed to the site's channel on Redis."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        counts = await client.pubsub_numsub(channel_name(app_key))
    finally:
        await client.aclose()
    return int(counts[0][1])


async def test_an_archive_asked_on_a_reaches_sockets_on_both_exactly_once(
    pair: Pair, footage: Footage
) -> None:
    """The phone asks A; its socket on B (authorised on A) and one on A each get it once."""
    a, b = pair
    answer = await phone_login(a)
    on_b = await PusherClient.connect(b)
    await on_b.subscribe(a, answer, PHONE)  # /broadcasting/auth on A, the socket on B
    await on_b.next_event("pusher_internal:subscription_succeeded")
    on_a = await PusherClient.connect(a)
    await on_a.subscribe(a, answer, PHONE)
    await on_a.next_event("pusher_internal:subscription_succeeded")

    status, body = await ask_archive(a, answer, footage)
    assert status == 202
    download_id = body["download"]["id"]
    for pusher in (on_b, on_a):
        pushed = await pusher.archive_event("archive_generated")
        assert pushed["status"] == "ok"
        assert pushed["data"]["download"]["id"] == download_id
        assert pushed["data"]["download"]["url"]
    for pusher in (on_b, on_a):
        await no_more(pusher, "archive_generated")
    await on_a.ws.close()
    await on_b.ws.close()


async def test_a_device_reconnecting_to_b_gets_the_replay_of_an_archive_made_on_a(
    pair: Pair, footage: Footage
) -> None:
    """The archive is made through A; subscribing on B replays archive_generated."""
    a, b = pair
    answer, ready = await ready_archive(a, footage)
    # The live archive_generated A sent when it finished passes B before the device is there.
    await asyncio.sleep(1.0)
    on_b = await PusherClient.connect(b)
    await on_b.subscribe(b, answer, PHONE)
    replayed = await on_b.archive_event("archive_generated")
    assert replayed["data"]["download"]["id"] == ready["id"]
    assert replayed["data"]["download"]["url"] == ready["url"]
    await no_more(on_b, "archive_generated")
    await on_b.ws.close()


@pytest.mark.parametrize("auth_on", ["a", "b"])
async def test_ending_a_session_on_a_closes_its_socket_on_b(pair: Pair, auth_on: str) -> None:
    """POST /api/v1/sessions/{id} to A closes the session's socket on B with 4009."""
    a, b = pair
    answer = await phone_login(a)
    on_b = await PusherClient.connect(b)
    await on_b.subscribe(a if auth_on == "a" else b, answer, PHONE)
    await on_b.next_event("pusher_internal:subscription_succeeded")
    headers = bearer(answer, PHONE, "ios-cctv")
    assert (await b.get("/api/v1/downloads", headers=headers)).status == 200
    await asyncio.sleep(0.2)  # a bind through A travels through Redis to B
    response = await a.post(
        f"/api/v1/sessions/{answer['user']['access_token_id']}", headers=headers
    )
    assert response.status == 200
    assert await closed_with(on_b) == 4009
    # And B, which had the session in memory, refuses its token at once.
    assert (await b.get("/api/v1/downloads", headers=headers)).status == 401


async def test_sighup_on_one_process_closes_ended_sessions_on_the_other(pair: Pair) -> None:
    """`user passwd` ends sessions in the database and signals B only: A's socket closes."""
    a, _ = pair
    answer = await phone_login(a)
    on_a = await PusherClient.connect(a)
    await on_a.subscribe(a, answer, PHONE)
    await on_a.next_event("pusher_internal:subscription_succeeded")
    db = a.app[appkeys.DB]
    user = await db.user_with_hash("alice")
    assert user is not None
    await db.end_user_sessions(user[0].id, datetime.now(UTC))  # what `user passwd` does
    # One process gets the signal (both apps share this process: B's handler was set last).
    os.kill(os.getpid(), signal.SIGHUP)
    assert await closed_with(on_a) == 4009


async def test_failed_logins_split_between_a_and_b_are_throttled_together(
    pair: Pair, config: Config
) -> None:
    """login_attempts failures, alternating A and B, and the next try on either is a 429."""
    a, b = pair
    for attempt in range(config.login_attempts):
        response = await (a, b)[attempt % 2].post(
            "/api/v1/token",
            json={"login": "alice", "password": "wrong"},
            headers={"X-Client": "ios-cctv", "X-UUID": PHONE},
        )
        assert response.status == 422, attempt
    for client in (a, b):
        response = await client.post(
            "/api/v1/token",
            json={"login": "alice", "password": PASSWORD},
            headers={"X-Client": "ios-cctv", "X-UUID": PHONE},
        )
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= int(config.login_window)


async def test_the_wsurl_throttle_counts_requests_to_both(pair: Pair) -> None:
    """20 GET /api/v1/wsurl split between A and B, and the 21st on either is a 429."""
    a, b = pair
    headers = {"X-Client": "ios-cctv", "X-UUID": PHONE}
    statuses = [
        (await (a, b)[i % 2].get("/api/v1/wsurl", headers=headers)).status for i in range(20)
    ]
    assert statuses == [200] * 20
    for client in (a, b):
        assert (await client.get("/api/v1/wsurl", headers=headers)).status == 429
    other = {"X-Client": "ios-cctv", "X-UUID": "another-phone"}
    assert (await b.get("/api/v1/wsurl", headers=other)).status == 200


async def test_malformed_messages_on_the_channel_are_dropped_and_pushes_go_on(
    pair: Pair, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage from another publisher is logged and dropped; the next real event arrives."""
    a, b = pair
    answer = await phone_login(a)
    on_b = await PusherClient.connect(b)
    channel = await on_b.subscribe(b, answer, PHONE)
    await on_b.next_event("pusher_internal:subscription_succeeded")
    garbage = [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"v": 1, "from": "x", "kind": "event", "channel": 5, "event": "e", "data": {}}',
        b'{"v": 1, "from": "x", "kind": ["event"]}',
        b'{"v": 2, "from": "x", "kind": "reread"}',
        b'{"v": 1, "from": "x", "kind": "event", "channel": "c", "event": "e", "data": 1}',
        b"[" * 100_000,
    ]
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for raw in garbage:
            await client.publish(channel_name(a.app[appkeys.KEYSTORE].app_key), raw)
    finally:
        await client.aclose()
    a.app[appkeys.HUB].publish(channel, EVENT, {"type": "archive_progress", "n": 1})
    assert (await on_b.archive_event("archive_progress"))["n"] == 1
    dropped = [r for r in caplog.records if "dropped a malformed message" in r.getMessage()]
    assert len(dropped) == 2 * len(garbage)  # each process drops each one
    await on_b.ws.close()


async def test_redis_restarted_mid_run_pushes_flow_again_and_its_password_is_never_logged(
    start_pair: Callable[[str], Awaitable[Pair]],
    redis_server_binary: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis away: A's own sockets still get A's events; back: B gets them again."""
    caplog.set_level(logging.INFO)
    password = "s3cret-redis-pw"
    server = RedisServer(redis_server_binary, tmp_path, password=password)
    server.start()
    try:
        a, b = await start_pair(server.url)
        app_key = a.app[appkeys.KEYSTORE].app_key
        answer = await phone_login(a)
        on_a, on_b = await PusherClient.connect(a), await PusherClient.connect(b)
        for pusher in (on_a, on_b):
            channel = await pusher.subscribe(a, answer, PHONE)
            await pusher.next_event("pusher_internal:subscription_succeeded")
        hub = a.app[appkeys.HUB]
        hub.publish(channel, EVENT, {"type": "archive_progress", "n": 1})
        for pusher in (on_a, on_b):
            assert (await pusher.archive_event("archive_progress"))["n"] == 1

        for outage in (1, 2):  # twice: each outage is logged once, and survived
            server.stop()
            await asyncio.sleep(0.5)
            hub.publish(channel, EVENT, {"type": "archive_progress", "n": 10 * outage})
            assert (await on_a.archive_event("archive_progress"))["n"] == 10 * outage
            # Logins still answer (throttled in process meanwhile).
            assert (await phone_login(b))["access_token"]

            server.start()
            for _ in range(150):  # both subscribe again within their backoff (at most 5 s)
                if await subscribers(server.url, app_key) == 2:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the processes did not subscribe again: {caplog.text}")
            hub.publish(channel, EVENT, {"type": "archive_progress", "n": 10 * outage + 1})
            assert (await on_a.archive_event("archive_progress"))["n"] == 10 * outage + 1
            # B may also get the event A kept for Redis while it was away, first.
            seen = [(await on_b.archive_event("archive_progress"))["n"]]
            if seen[0] == 10 * outage:
                seen.append((await on_b.archive_event("archive_progress"))["n"])
            assert seen[-1] == 10 * outage + 1
        await on_a.ws.close()
        await on_b.ws.close()
    finally:
        server.stop()
    lost = [r for r in caplog.records if "lost Redis" in r.getMessage()]
    assert len(lost) == 4, caplog.text  # once per process and outage, not once per retry
    back = [r for r in caplog.records if "subscribed again" in r.getMessage()]
    assert len(back) == 4, caplog.text
    assert password not in caplog.text


@pytest.mark.parametrize("auth", ["", "user:pw-not-shown@"])
async def test_redis_down_at_start_is_a_clear_error_at_once(
    config: Config, auth: str, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    """Nothing listens at VMS_REDIS_URL: start-up fails within seconds, password not shown."""
    port = worker_port()
    app = create_app(replace(config, redis_url=f"redis://{auth}127.0.0.1:{port}/0"))
    server = TestServer(app, host="127.0.0.1", port=config.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StartupError) as raised:
        await server.start_server()
    assert loop.time() - started < 10
    assert str(raised.value).startswith(f"cannot use Redis at redis://127.0.0.1:{port}/0: ")
    assert "pw-not-shown" not in str(raised.value)
    await server.close()


def test_without_redis_url_nothing_imports_redis() -> None:
    """The single-box path never imports redis-py."""
    code = (
        "import sys, vms.app, vms.cli, vms.push.bus, vms.throttle\n"
        "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if 'redis' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.node
async def test_pusher_js_on_b_gets_the_archive_asked_on_a_and_downloads_it(
    node: str, pair: Pair, footage: Footage, tmp_path: Path
) -> None:
    """Stock pusher-js and Echo on B, authorised by A: the archive asked on A arrives, downloads."""
    a, b = pair
    answer = await login(a, device=E2E_PHONE, x_client="ios-cctv")
    headers = {"X-Client": "ios-cctv", "X-UUID": E2E_PHONE}
    wsurl = await (await b.get("/api/v1/wsurl", headers=headers)).json()
    wsurl["port"] = b.port  # the balancer sent the socket to B
    auth = str(a.make_url("/broadcasting/auth"))
    config = phone_config(wsurl, auth, answer, E2E_PHONE, "ios-cctv", tmp_path / "from-node.mp4")
    async with running_phone(node, config, tmp_path) as device:
        assert b.app[appkeys.HUB].connection_count == 2
        assert a.app[appkeys.HUB].connection_count == 0
        response = await a.get(
            "/api/v1/cameras/1/archive/link",
            params=archive_range(footage),
            headers=bearer(answer, E2E_PHONE, "ios-cctv"),
        )
        assert response.status == 202
        download_id = (await response.json())["download"]["id"]
        pushed = (await device.next("pusher", "event", _generated))["data"]
        assert pushed["status"] == "ok"
        assert pushed["data"]["download"]["id"] == download_id
        echoed = (await device.next("echo", "event", _generated))["data"]
        assert echoed == pushed
        fetched = await device.next("pusher", "download")
        on_disk = a.app[appkeys.FILES].path(download_id).read_bytes()
        assert fetched["status"] == 200 and fetched["size"] == len(on_disk)
        assert device.saved.read_bytes() == on_disk
        assert await device.quit() == 0
        twice = [r for r in device.seen if r["type"] == "event" and _generated(r)]
        assert len(twice) == 2  # once for pusher-js, once for Echo


async def test_a_wrong_redis_password_is_a_clear_error_that_does_not_show_it(
    config: Config, redis_server_binary: str, tmp_path: Path
) -> None:
    """Redis refuses the password: start-up fails, naming the server but not the password."""
    server = RedisServer(redis_server_binary, tmp_path, password="the-right-one")
    server.start()
    try:
        url = f"redis://:the-wrong-one@127.0.0.1:{server.port}/0"
        server_app = TestServer(create_app(replace(config, redis_url=url)), host="127.0.0.1")
        with pytest.raises(StartupError) as raised:
            await server_app.start_server()
        await server_app.close()
    finally:
        server.stop()
    message = str(raised.value)
    assert message.startswith(f"cannot use Redis at redis://127.0.0.1:{server.port}/0: ")
    assert "the-wrong-one" not in message and "the-right-one" not in message


def test_serve_with_redis_down_exits_at_once_with_one_line(tmp_path: Path) -> None:
    """`server.py serve` with nothing at VMS_REDIS_URL: exit 1, one clear line, nothing opened."""
    port = worker_port()
    env = {
        **os.environ,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_PORT": str(worker_port()),
        "VMS_MEDIA_PORT": "0",
        "VMS_DEMO_CAMERAS": "false",
        "VMS_REDIS_URL": f"redis://:not-for-eyes@127.0.0.1:{port}/0",
    }
    done = subprocess.run(
        [sys.executable, "server.py", "serve"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"error: cannot use Redis at redis://127.0.0.1:{port}/0: " in done.stderr
    assert "not-for-eyes" not in done.stderr + done.stdout
    assert "password" not in done.stdout  # no first-start account was made and shown
    assert not (tmp_path / "data" / "keys").exists()
