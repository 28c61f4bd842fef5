"""Archives in S3-compatible storage (moto on loopback): uploaded, served, swept, refused."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.support.badserver import BadMediaServer
from tests.support.pages import Browser
from tests.support.processes import ROOT, worker_port
from tests.support.s3 import CREDENTIALS, S3Server
from tests.support.service import (
    PHONE,
    Client,
    Footage,
    ask_archive,
    bearer,
    login,
    ready_archive,
    running_archive,
    wait_status,
)
from vms import appkeys
from vms.archive.cleanup import purge_expired
from vms.archive.digests import etag, repr_digest
from vms.archive.objects import open_bucket
from vms.config import Config
from vms.dates import utcnow

PREFIX = "site-a/archives"


@pytest.fixture
async def s3(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[S3Server]:
    """The session's S3 server, or (parametrized "own") one of this test's, to stop at will."""
    if getattr(request, "param", None) != "own":
        yield s3_server
        return
    server = S3Server(worker_port())
    server.start(tmp_path / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bucket(s3: S3Server) -> str:
    """A new bucket of this test's own."""
    return await s3.create_bucket()


@pytest.fixture
def proxy() -> bool:
    """Whether the service streams objects itself (VMS_STORAGE_PROXY)."""
    return False


@pytest.fixture
def min_free_disk() -> int:
    """VMS_MIN_FREE_DISK: off unless a test sets it."""
    return 0


@pytest.fixture
def config(
    config: Config,
    s3: S3Server,
    bucket: str,
    proxy: bool,
    min_free_disk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> Config:
    """The test's settings with archives in its bucket, credentials in the AWS environment."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return dataclasses.replace(
        config,
        storage_url=f"s3://{bucket}/{PREFIX}",
        s3_endpoint=s3.endpoint,
        storage_proxy=proxy,
        min_free_disk=min_free_disk,
        # A stalled fetch is held until the test lets it go, not cut by the read timeout.
        fetch_read_timeout=30.0,
    )


def _link(ready: dict[str, Any]) -> str:
    url = urlsplit(ready["url"])
    return f"{url.path}?{url.query}"


def _local_files(service: Client) -> list[str]:
    root = service.app[appkeys.FILES].root
    return sorted(os.listdir(root)) if root.exists() else []


async def test_a_phone_archive_is_uploaded_and_its_link_redirects_to_the_same_bytes(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """Ready: the object and poster are in the bucket (size, SHA-256 as the DOWNLOAD says),
    nothing stays in DATA, and the signed URL answers 307 to a presigned GET of it."""
    _phone, ready = await ready_archive(service, footage)
    key = f"{PREFIX}/{ready['id']}.mp4"
    objects = await s3.objects(bucket)
    assert set(objects) == {key, f"{PREFIX}/{ready['id']}.poster.jpg"}
    assert objects[key] == ready["size"] > 100_000
    assert await s3.sha256(bucket, key) == ready["sha256"]
    assert await s3.open_uploads(bucket) == []
    assert _local_files(service) == []
    poster = await s3.read(bucket, f"{PREFIX}/{ready['id']}.poster.jpg")
    assert poster[:3] == b"\xff\xd8\xff"  # a JPEG

    response = await service.get(_link(ready), allow_redirects=False)
    assert response.status == 307
    assert response.headers["ETag"] == etag(ready["sha256"])
    assert response.headers["Cache-Control"] == "private, no-store"
    location = response.headers["Location"]
    assert location.startswith(f"{s3.endpoint}/{bucket}/{key}?")
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in location
    query = parse_qs(urlsplit(location).query)
    lifetime = service.app[appkeys.CONFIG].archive_ttl
    assert 0 < int(query["X-Amz-Expires"][0]) <= lifetime

    async with aiohttp.ClientSession() as http:
        async with http.get(location) as whole:
            assert whole.status == 200
            assert whole.headers["Content-Type"] == "video/mp4"
            assert whole.headers["Content-Disposition"].startswith("attachment;")
            assert "Gate" in whole.headers["Content-Disposition"]
            body = await whole.read()
        async with http.get(location, headers={"Range": "bytes=100-199"}) as part:
            assert part.status == 206
            assert await part.read() == body[100:200]
    assert hashlib.sha256(body).hexdigest() == ready["sha256"]
    # The browser's HEAD is redirected the same way.
    head = await service.head(_link(ready), allow_redirects=False)
    assert head.status == 307 and head.headers["Location"].startswith(s3.endpoint)


@pytest.mark.parametrize("proxy", [True])
async def test_in_proxy_mode_the_service_streams_the_object_with_ranges(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """VMS_STORAGE_PROXY: 200 with the bytes and the digest's validators, 206 for a Range,
    304 for the same ETag, 416 past the end, HEAD with the length."""
    _phone, ready = await ready_archive(service, footage)
    stored = await s3.read(bucket, f"{PREFIX}/{ready['id']}.mp4")
    whole = await service.get(_link(ready))
    assert whole.status == 200
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["ETag"] == etag(ready["sha256"])
    assert whole.headers["Repr-Digest"] == repr_digest(ready["sha256"])
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert "Gate" in whole.headers["Content-Disposition"]
    assert await whole.read() == stored

    part = await service.get(_link(ready), headers={"Range": "bytes=0-99"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(stored)}"
    assert await part.read() == stored[:100]

    same = await service.get(_link(ready), headers={"If-None-Match": etag(ready["sha256"])})
    assert same.status == 304
    past = await service.get(_link(ready), headers={"Range": f"bytes={len(stored) + 10}-"})
    assert past.status == 416
    head = await service.head(_link(ready))
    assert head.status == 200 and head.headers["Content-Length"] == str(len(stored))


async def test_the_cleanup_timer_deletes_an_expired_archive_and_its_poster(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """Past its lifetime: both objects are gone, the link is 410, the DOWNLOAD expired."""
    phone, ready = await ready_archive(service, footage)
    later = utcnow() + timedelta(seconds=service.app[appkeys.CONFIG].archive_ttl + 1)
    assert await purge_expired(service.app[appkeys.DB], service.app[appkeys.FILES], later) == 1
    assert await s3.objects(bucket) == {}
    assert (await service.get(_link(ready), allow_redirects=False)).status == 410
    after = await wait_status(service, phone, ready["id"], {"expired"})
    assert after["is_file_exists"] is False and after["url"] is None


async def test_deleting_a_ready_archive_deletes_its_objects(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """DELETE /api/v1/downloads/{id}: expired at once, nothing left in the bucket."""
    phone, ready = await ready_archive(service, footage)
    response = await service.delete(
        f"/api/v1/downloads/{ready['id']}", headers=bearer(phone, PHONE, "ios-cctv")
    )
    assert (await response.json())["data"]["status"] == "expired"
    assert await s3.objects(bucket) == {}
    assert (await service.get(_link(ready), allow_redirects=False)).status == 410


async def test_a_cancelled_fetch_leaves_no_object_and_no_open_upload(
    service: Client, footage: Footage, bad_camera: BadMediaServer, s3: S3Server, bucket: str
) -> None:
    """A stalled fetch has its multipart upload open; cancelling it aborts the upload."""
    bad_camera.mode = "stall"
    phone, download_id = await running_archive(service, footage)
    assert await s3.open_uploads(bucket) == [f"{PREFIX}/{download_id}.mp4"]
    response = await service.delete(
        f"/api/v1/downloads/{download_id}", headers=bearer(phone, PHONE, "ios-cctv")
    )
    assert (await response.json())["data"]["status"] == "cancelled"
    bad_camera.release.set()
    assert await s3.open_uploads(bucket) == []
    assert await s3.objects(bucket) == {}
    assert _local_files(service) == []


@pytest.mark.parametrize("s3", ["own"], indirect=True)
async def test_storage_stopped_mid_fetch_fails_the_job_with_a_clear_message(
    service: Client, footage: Footage, bad_camera: BadMediaServer, s3: S3Server
) -> None:
    """The S3 server dies while a fetch runs: retried, then failed saying so; no hang."""
    bad_camera.mode = "stall"
    phone, download_id = await running_archive(service, footage)
    s3.stop()
    bad_camera.mode = "ok"
    bad_camera.release.set()
    failed = await wait_status(service, phone, download_id, {"failed", "ready"}, timeout=60)
    assert failed["status"] == "failed"
    assert failed["message"] == "The archive storage could not be reached."
    assert _local_files(service) == []


async def test_the_sweep_removes_objects_no_download_owns_and_aborts_dead_uploads(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """Objects with no row go, other keys stay; an upload whose job is over is aborted."""
    _phone, ready = await ready_archive(service, footage)
    async with s3.client() as client:
        for name in ("999999.mp4", "999999.poster.jpg", "notes.txt"):
            await client.put_object(Bucket=bucket, Key=f"{PREFIX}/{name}", Body=b"x")
        await client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/999998.mp4")
    removed = await purge_expired(service.app[appkeys.DB], service.app[appkeys.FILES], utcnow())
    assert removed == 1
    assert set(await s3.objects(bucket)) == {
        f"{PREFIX}/{ready['id']}.mp4",
        f"{PREFIX}/{ready['id']}.poster.jpg",
        f"{PREFIX}/notes.txt",
    }
    assert await s3.open_uploads(bucket) == []
    # The ready archive is untouched and still served.
    assert (await service.get(_link(ready), allow_redirects=False)).status == 307


async def test_a_ready_archive_whose_object_vanished_reads_expired(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """An object deleted behind the service's back: the next sweep marks it expired."""
    phone, ready = await ready_archive(service, footage)
    async with s3.client() as client:
        await client.delete_object(Bucket=bucket, Key=f"{PREFIX}/{ready['id']}.mp4")
    await purge_expired(service.app[appkeys.DB], service.app[appkeys.FILES], utcnow())
    after = await wait_status(service, phone, ready["id"], {"expired"})
    assert after["url"] is None


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`server.py serve` with these settings, expected to refuse to start."""
    settings = {
        **os.environ,
        **CREDENTIALS,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_PORT": str(worker_port()),
        "VMS_MEDIA_PORT": "0",
        "VMS_DEMO_CAMERAS": "false",
        **env,
    }
    return subprocess.run(
        [sys.executable, "server.py", "serve"],
        cwd=ROOT,
        env=settings,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_a_missing_bucket_or_unreachable_storage_stops_the_start_in_one_line(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """No bucket, or nothing listening: exit 1 with one line saying so, and no secret."""
    missing = await asyncio.to_thread(
        _serve,
        tmp_path / "a",
        VMS_STORAGE_URL="s3://no-such-bucket-here/x",
        VMS_S3_ENDPOINT=s3_server.endpoint,
    )
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "error: the archive storage s3://no-such-bucket-here/x at 127.0.0.1"
    )
    assert lines[-1].endswith(": no such bucket")
    closed = await asyncio.to_thread(
        _serve,
        tmp_path / "b",
        VMS_STORAGE_URL="s3://some-bucket/x",
        VMS_S3_ENDPOINT=f"http://127.0.0.1:{worker_port()}",
    )
    assert closed.returncode == 1
    assert closed.stderr.strip().splitlines()[-1].endswith("could not be reached")
    anonymous = await asyncio.to_thread(
        _serve,
        tmp_path / "c",
        VMS_STORAGE_URL="s3://some-bucket/x",
        VMS_S3_ENDPOINT=s3_server.endpoint,
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    assert anonymous.returncode == 1
    assert (
        anonymous.stderr.strip()
        .splitlines()[-1]
        .endswith("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    )
    for result in (missing, closed, anonymous):
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout


async def test_a_long_archive_goes_up_in_parts_of_at_least_5_mib_and_shows_only_when_complete(
    s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 MiB in 4 MiB batches: parts of 8, 8 and 4 MiB, no object until complete."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    data = os.urandom(20 << 20)
    async with open_bucket(f"s3://{bucket}/{PREFIX}", s3.endpoint) as store:
        upload = store.upload("7.mp4")
        await upload.start()
        for offset in range(0, len(data), 4 << 20):
            await upload.add([data[offset : offset + (4 << 20)]])
        assert await s3.objects(bucket) == {}
        async with s3.client() as client:
            listed = await client.list_parts(
                Bucket=bucket, Key=f"{PREFIX}/7.mp4", UploadId=upload.upload_id or ""
            )
        assert [part["Size"] for part in listed["Parts"]] == [8 << 20, 8 << 20]
        await upload.complete()
    assert await s3.objects(bucket) == {f"{PREFIX}/7.mp4": len(data)}
    assert await s3.read(bucket, f"{PREFIX}/7.mp4") == data
    assert await s3.open_uploads(bucket) == []


async def test_verify_checks_an_object_against_its_manifest_streaming_it(
    service: Client, footage: Footage, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """`server.py verify s3://BUCKET/KEY MANIFEST`: OK for the archive, FAILED for another."""
    _phone, ready = await ready_archive(service, footage)
    manifest = tmp_path / "archive.jws"
    manifest.write_text(await service.app[appkeys.DB].manifest(ready["id"]) or "")
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(await (await service.get("/.well-known/jwks.json")).read())
    async with s3.client() as client:
        await client.put_object(Bucket=bucket, Key="other.mp4", Body=b"not the archive")

    def run(file: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "server.py", "verify", file, str(manifest), "--jwks", str(jwks)],
            cwd=ROOT,
            env={
                **os.environ,
                **CREDENTIALS,
                "VMS_S3_ENDPOINT": s3.endpoint,
                "VMS_DATA_DIR": str(tmp_path / "cli"),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = await asyncio.to_thread(run, f"s3://{bucket}/{PREFIX}/{ready['id']}.mp4")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("OK:")
    bad = await asyncio.to_thread(run, f"s3://{bucket}/other.mp4")
    assert bad.returncode == 1
    assert "FAILED: size: the file has 15 bytes" in bad.stderr


@pytest.mark.parametrize("proxy", [False, True])
async def test_the_history_player_shows_the_poster_from_the_bucket(
    service: Client, footage: Footage, s3: S3Server, bucket: str, proxy: bool
) -> None:
    """The owner's poster URL redirects to the object (or streams it); others get 404."""
    _phone, ready = await ready_archive(service, footage)
    stored = await s3.read(bucket, f"{PREFIX}/{ready['id']}.poster.jpg")
    base = str(service.make_url("")).rstrip("/")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        alice = Browser(session, base)
        assert (await alice.login("alice")).status == 303
        assert f'poster="/history/downloads/{ready["id"]}/poster"' in await alice.page("/history")
        response = await alice.get(f"/history/downloads/{ready['id']}/poster")
        if not proxy:
            assert response.status == 307
            location = response.headers["Location"]
            assert location.startswith(f"{s3.endpoint}/{bucket}/{PREFIX}/{ready['id']}.poster")
            response = await session.get(location)
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/jpeg"
        assert await response.read() == stored
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        bob = Browser(session, base)
        assert (await bob.login("bob")).status == 303
        assert (await bob.get(f"/history/downloads/{ready['id']}/poster")).status == 404


@pytest.mark.parametrize("min_free_disk", [1 << 60])
async def test_the_disk_guard_still_covers_the_local_copy(
    service: Client, footage: Footage, s3: S3Server, bucket: str
) -> None:
    """The fetch's checked copy is in DATA, so VMS_MIN_FREE_DISK still answers 507."""
    phone = await login(service, device=PHONE, x_client="ios-cctv")
    status, body = await ask_archive(service, phone, footage)
    assert status == 507
    assert body == {"message": "Not enough disk space for new archives."}
    assert await s3.objects(bucket) == {}


async def test_the_sweep_leaves_a_running_fetch_its_upload_however_long_it_runs(
    service: Client, footage: Footage, bad_camera: BadMediaServer, s3: S3Server, bucket: str
) -> None:
    """A stalled fetch's upload survives sweeps now and two hours on; the fetch still ends."""
    bad_camera.mode = "stall"
    phone, download_id = await running_archive(service, footage)
    db, files = service.app[appkeys.DB], service.app[appkeys.FILES]
    for moment in (utcnow(), utcnow() + timedelta(hours=2)):
        await purge_expired(db, files, moment)
        assert await s3.open_uploads(bucket) == [f"{PREFIX}/{download_id}.mp4"]
    bad_camera.mode = "ok"
    bad_camera.release.set()
    ready = await wait_status(service, phone, download_id, {"ready", "failed"}, timeout=60)
    assert ready["status"] == "ready"
    assert await s3.open_uploads(bucket) == []
