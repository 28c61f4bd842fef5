"""Server-side archives for mobile and web clients: queueing, fetching, pushing, serving."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import pytest

from tests.support.badserver import BadMediaServer
from tests.support.pusher import PusherClient
from tests.support.service import (
    PHONE,
    Client,
    Footage,
    ask_archive,
    bearer,
    login,
    rfc3339,
    seed,
    wait_status,
)
from vms import appkeys
from vms.app import create_app
from vms.archive.cleanup import purge_expired
from vms.config import Config
from vms.dates import utcnow
from vms.store import open_store


async def test_mobile_client_gets_202_then_a_ready_archive_it_can_download(
    service: Client, footage: Footage, tmp_path: Path
) -> None:
    """An iOS client gets 202 queued, then the archive is ready and downloads as a real MP4."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    status, body = await ask_archive(service, answer, footage)
    assert status == 202
    assert body["status"] == "queued"
    download = body["download"]
    assert download["status"] in ("queued", "in progress")
    assert download["url"] is None and download["is_file_exists"] is False
    assert download["name"].startswith("Gate, ")

    ready = await wait_status(service, answer, download["id"], {"ready", "failed"})
    assert ready["status"] == "ready", ready
    assert ready["is_file_exists"] is True
    url = urlsplit(ready["url"])
    assert url.path == f"/archive/download/{download['id']}"
    query = parse_qs(url.query)
    assert set(query) == {"expires", "signature"}

    response = await service.get(f"{url.path}?{url.query}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert "Gate" in response.headers["Content-Disposition"]
    saved = tmp_path / "archive.mp4"
    saved.write_bytes(await response.read())
    with av.open(str(saved)) as container:
        seconds = float(container.duration or 0) / 1_000_000
    assert 120 - 2.5 <= seconds <= 120 + 2.5

    partial = await service.get(f"{url.path}?{url.query}", headers={"Range": "bytes=0-99"})
    assert partial.status == 206
    assert len(await partial.read()) == 100


async def test_archive_is_written_under_data_archives_and_no_partial_remains(
    service: Client, footage: Footage
) -> None:
    """The finished file lives in DATA/archives and no .part file is left behind."""
    answer = await login(service, device=PHONE, x_client="android-cctv")
    _, body = await ask_archive(service, answer, footage)
    await wait_status(service, answer, body["download"]["id"], {"ready"})
    archives = service.app[appkeys.CONFIG].archives_dir
    names = sorted(p.name for p in archives.iterdir())
    download_id = body["download"]["id"]
    assert names == [f"{download_id}.mp4", f"{download_id}.poster.jpg"]  # and its poster frame


async def test_same_device_same_range_gets_the_same_download_and_a_fresh_push(
    service: Client, footage: Footage
) -> None:
    """Asking again returns the same id, and once ready the push is sent again."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    _, first = await ask_archive(service, answer, footage)
    _, second = await ask_archive(service, answer, footage)
    assert second["download"]["id"] == first["download"]["id"]
    await wait_status(service, answer, first["download"]["id"], {"ready"})

    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, answer, PHONE)
    replayed = await pusher.archive_event("archive_generated")  # offline replay on subscribe
    assert replayed["data"]["download"]["id"] == first["download"]["id"]
    status, third = await ask_archive(service, answer, footage)
    assert status == 202 and third["download"]["id"] == first["download"]["id"]
    again = await pusher.archive_event("archive_generated")
    assert again["status"] == "ok" and again["data"]["download"]["url"]
    await pusher.ws.close()


async def test_another_user_with_the_same_device_id_never_gets_the_archive(
    service: Client, footage: Footage
) -> None:
    """B logs in with A's X-UUID and asks for the same camera and range: B gets B's own job."""
    await service.app[appkeys.DB].grant(2, 1)  # bob may see camera 1 too, as alice does
    alice = await login(service, "alice", device=PHONE, x_client="ios-cctv")
    _, first = await ask_archive(service, alice, footage)
    await wait_status(service, alice, first["download"]["id"], {"ready"})

    bob = await login(service, "bob", device=PHONE, x_client="ios-cctv")
    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, bob, PHONE)
    await pusher.next_event("pusher_internal:subscription_succeeded")
    status, second = await ask_archive(service, bob, footage)
    assert status == 202
    theirs = second["download"]
    assert theirs["id"] != first["download"]["id"]
    assert theirs["user_id"] == 2 and theirs["url"] is None
    done = await pusher.archive_event("archive_generated")
    assert done["data"]["download"]["id"] == theirs["id"]  # bob hears of his own only
    # Alice's download stays hers: bob can neither read it nor is it in his list.
    response = await service.get(
        f"/api/v1/downloads/{first['download']['id']}", headers=bearer(bob, PHONE, "ios-cctv")
    )
    assert response.status == 404
    await pusher.ws.close()


async def test_push_announces_progress_and_the_ready_archive(
    service: Client, footage: Footage
) -> None:
    """A subscribed device hears archive_progress and then archive_generated with the URL."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, answer, PHONE)
    await pusher.next_event("pusher_internal:subscription_succeeded")
    _, body = await ask_archive(service, answer, footage)
    progress = await pusher.archive_event("archive_progress")
    assert progress["status"] == "ok"
    assert 0 <= progress["data"]["progress"] <= 100
    assert progress["data"]["download"]["id"] == body["download"]["id"]
    done = await pusher.archive_event("archive_generated")
    assert done["status"] == "ok"
    assert done["message"] is None and done["subject"] is None
    assert done["data"]["download"]["status"] == "ready"
    assert done["data"]["download"]["url"].startswith("http://127.0.0.1:")
    await pusher.ws.close()


async def test_another_device_of_the_same_user_is_not_told(
    service: Client, footage: Footage
) -> None:
    """Events go to the requesting session's channel only."""
    phone = await login(service, device=PHONE, x_client="ios-cctv")
    tablet = await login(service, device="tablet", x_client="android-cctv")
    listener = await PusherClient.connect(service)
    await listener.subscribe(service, tablet, "tablet")
    await listener.next_event("pusher_internal:subscription_succeeded")
    _, body = await ask_archive(service, phone, footage)
    await wait_status(service, phone, body["download"]["id"], {"ready"})
    with pytest.raises(TimeoutError):
        await listener.archive_event("archive_generated", timeout=0.5)
    await listener.ws.close()


async def test_too_many_pending_archives_per_device_is_429(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """Past VMS_MAX_PENDING_PER_DEVICE queued or running archives the device gets 429."""
    bad_camera.mode = "stall"
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    limit = service.app[appkeys.CONFIG].max_pending_per_device
    start = footage.start
    for index in range(limit):
        response = await service.get(
            "/api/v1/cameras/1/archive/link",
            params={
                "from": rfc3339(start + timedelta(minutes=index)),
                "to": rfc3339(start + timedelta(minutes=index + 1)),
            },
            headers=bearer(answer, PHONE, "ios-cctv"),
        )
        assert response.status == 202
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=30))},
        headers=bearer(answer, PHONE, "ios-cctv"),
    )
    assert response.status == 429
    assert await response.json() == {"message": "Too Many Attempts."}
    assert int(response.headers["Retry-After"]) > 0
    other = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=30))},
        headers=bearer(await login(service, device="other", x_client="web"), "other", "web"),
    )
    assert other.status == 202


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error500", "The media server answered with an error (HTTP 500)."),
        ("truncated", "The media server connection broke off."),
        ("garbage", "The media server sent an incomplete video."),
        ("notfound", "No recording found between from and to."),
    ],
)
async def test_misbehaving_media_server_fails_cleanly_with_a_readable_message(
    service: Client, footage: Footage, bad_camera: BadMediaServer, mode: str, message: str
) -> None:
    """5xx, truncation, garbage, stalls and 404 end in `failed` with a message, no file left."""
    bad_camera.mode = mode
    answer = await login(service, device=PHONE, x_client="web")
    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, answer, PHONE)
    _, body = await ask_archive(service, answer, footage)
    failed = await wait_status(service, answer, body["download"]["id"], {"failed", "ready"})
    assert failed["status"] == "failed"
    assert failed["url"] is None and failed["is_file_exists"] is False
    event = await pusher.archive_event("archive_generated")
    assert event["status"] == "error"
    assert event["message"] == message
    assert event["data"]["download"]["url"] is None
    retryable = mode != "notfound"
    attempts = service.app[appkeys.CONFIG].fetch_attempts
    assert bad_camera.get_requests == (attempts if retryable else 1)
    assert list(service.app[appkeys.CONFIG].archives_dir.iterdir()) == []
    await pusher.ws.close()


async def test_a_transient_5xx_is_retried_and_the_archive_completes(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """One 503 and then a good answer: the job retries with backoff and ends ready."""
    bad_camera.mode = "flaky"
    bad_camera.failures_before_success = 2
    answer = await login(service, device=PHONE, x_client="web")
    _, body = await ask_archive(service, answer, footage)
    ready = await wait_status(service, answer, body["download"]["id"], {"ready", "failed"})
    assert ready["status"] == "ready"
    assert bad_camera.get_requests == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_disk_full_fails_the_job_and_leaves_no_partial_file(
    config: Config,
    footage: Footage,
    bad_media: tuple[BadMediaServer, str],
    aiohttp_client: Any,
    password_hash: str,
) -> None:
    """With DATA/archives on a full 4 KiB tmpfs the job fails at once with a clear message."""
    server, url = bad_media
    archives = config.archives_dir
    archives.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(archives)], check=True)
    try:
        db = await open_store(config)
        await seed(db, url, password_hash)
        await db.close()
        client = await aiohttp_client(create_app(config), server_kwargs={"port": config.port})
        answer = await login(client, device=PHONE, x_client="web")
        pusher = await PusherClient.connect(client)
        await pusher.subscribe(client, answer, PHONE)
        _, body = await ask_archive(client, answer, footage)
        event = await pusher.archive_event("archive_generated")
        assert event["status"] == "error"
        assert event["message"] == "The server ran out of disk space."
        assert event["data"]["download"]["id"] == body["download"]["id"]
        assert server.get_requests == 1  # a full disk is not retried
        assert list(archives.iterdir()) == []
        await pusher.ws.close()
        await client.close()
    finally:
        subprocess.run(["umount", "-l", str(archives)], check=False)


@pytest.mark.parametrize(
    "tamper",
    ["signature", "expires", "id", "drop-signature", "foreign"],
)
async def test_tampered_or_foreign_download_links_are_403(
    service: Client, footage: Footage, tamper: str
) -> None:
    """Any change to a signed URL, or a signature by another key, is 403 Invalid signature."""
    answer = await login(service, device=PHONE, x_client="web")
    _, body = await ask_archive(service, answer, footage)
    ready = await wait_status(service, answer, body["download"]["id"], {"ready"})
    url = urlsplit(ready["url"])
    query = parse_qs(url.query)
    expires, signature = query["expires"][0], query["signature"][0]
    download_id = body["download"]["id"]
    if tamper == "signature":
        target = f"{url.path}?expires={expires}&signature={'0' * 64}"
    elif tamper == "expires":
        target = f"{url.path}?expires={int(expires) + 3600}&signature={signature}"
    elif tamper == "id":
        target = f"/archive/download/{download_id + 1}?expires={expires}&signature={signature}"
    elif tamper == "drop-signature":
        target = f"{url.path}?expires={expires}"
    else:
        unsigned = ready["url"].split("&signature")[0].encode()
        forged = hmac.new(b"not the server secret", unsigned, hashlib.sha256)
        target = f"{url.path}?expires={expires}&signature={forged.hexdigest()}"
    response = await service.get(target)
    assert response.status == 403
    assert await response.json() == {"message": "Invalid signature."}


@pytest.mark.parametrize(
    "path",
    [
        "/archive/download/..%2F..%2Fkeys%2Fsecrets.json",
        "/archive/download/1.mp4",
        "/archive/download/-1",
        "/archive/download/%2e%2e",
        "/archive/download/99999999999999999999",
    ],
)
async def test_path_tricks_in_download_ids_never_reach_a_file(service: Client, path: str) -> None:
    """Ids that are not plain numbers are refused, never mapped to a path."""
    response = await service.get(f"{path}?expires=9999999999&signature={'a' * 64}")
    assert response.status in (403, 404)
    assert response.headers["Content-Type"] != "video/mp4"
    assert b"secret" not in await response.read()


async def test_expired_link_is_410_and_the_download_reads_expired_after_cleanup(
    service: Client, footage: Footage
) -> None:
    """After the archive's lifetime the URL answers 410 and the download says expired."""
    answer = await login(service, device=PHONE, x_client="web")
    _, body = await ask_archive(service, answer, footage)
    ready = await wait_status(service, answer, body["download"]["id"], {"ready"})
    later = utcnow() + timedelta(seconds=service.app[appkeys.CONFIG].archive_ttl + 1)
    removed = await purge_expired(service.app[appkeys.DB], service.app[appkeys.FILES], later)
    assert removed == 1
    url = urlsplit(ready["url"])
    response = await service.get(f"{url.path}?{url.query}")
    assert response.status == 410
    assert await response.json() == {"message": "This archive has expired."}
    after = await wait_status(service, answer, body["download"]["id"], {"expired"})
    assert after["is_file_exists"] is False and after["url"] is None
