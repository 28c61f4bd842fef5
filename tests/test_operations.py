"""Operating the box: health and readiness, the free-disk guard, unknown settings, the stop."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Service, free_port
from tests.support.service import Client, Footage, bearer, login, rfc3339, seed, wait_status
from vms.app import create_app
from vms.config import Config, ConfigError, parse_size, unknown_environment
from vms.store import open_store


async def test_healthz_answers_while_the_process_does(service: Client) -> None:
    """GET /healthz: 200 {"status": "ok"}, no token needed."""
    response = await service.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_lists_its_checks(service: Client) -> None:
    """GET /readyz: 200 ready, with the database, disk and shutdown checks."""
    response = await service.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "disk", "shutting_down"}
    assert all(check["ok"] for check in body["checks"].values())


async def _service_with(
    config: Config,
    media_server: str,
    password_hash: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
    **changes: Any,
) -> Client:
    config = dataclasses.replace(config, **changes)
    db = await open_store(config)
    await seed(db, media_server, password_hash)
    await db.close()
    return await aiohttp_client(create_app(config), server_kwargs={"port": config.port})


async def test_below_the_free_disk_floor_new_archives_are_507_and_readyz_is_503(
    config: Config,
    media_server: str,
    password_hash: str,
    footage: Footage,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    """A floor above what the disk has: archives 507, links still work, /readyz 503 disk."""
    client = await _service_with(
        config, media_server, password_hash, aiohttp_client, min_free_disk=1 << 60
    )
    start = footage.start + timedelta(seconds=30)
    params = {"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))}
    phone = await login(client, device="phone", x_client="ios-cctv")
    response = await client.get(
        "/api/v1/cameras/1/archive/link", params=params, headers=bearer(phone, "phone", "ios-cctv")
    )
    assert response.status == 507
    assert await response.json() == {"message": "Not enough disk space for new archives."}
    thick = await login(client, device="pc")
    response = await client.get(
        "/api/v1/cameras/1/archive/link", params=params, headers=bearer(thick, "pc")
    )
    assert response.status == 200  # nothing else is harmed
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503 and body["status"] == "not ready"
    assert body["checks"]["disk"]["ok"] is False and body["checks"]["database"]["ok"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_fetch_that_would_cross_the_floor_fails_with_that_message(
    config: Config,
    media_server: str,
    password_hash: str,
    footage: Footage,
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
) -> None:
    """On a 4 MiB disk with a 3 MiB floor, a 2-minute archive fails cleanly, leaving no file."""
    archives = config.archives_dir
    archives.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(archives)], check=True)
    try:
        client = await _service_with(
            config, media_server, password_hash, aiohttp_client, min_free_disk=3 << 20
        )
        phone = await login(client, device="phone", x_client="ios-cctv")
        start = footage.start + timedelta(seconds=10)
        params = {"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=4))}
        response = await client.get(
            "/api/v1/cameras/1/archive/link",
            params=params,
            headers=bearer(phone, "phone", "ios-cctv"),
        )
        assert response.status == 202, await response.text()
        download_id = (await response.json())["download"]["id"]
        failed = await wait_status(client, phone, download_id, {"failed", "ready"}, device="phone")
        assert failed["status"] == "failed", failed
        assert failed["message"] == "Not enough disk space for new archives."
        assert list(archives.iterdir()) == []
        await client.close()
    finally:
        subprocess.run(["umount", "-l", str(archives)], check=False)


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1048576", 1 << 20), ("1GiB", 1 << 30), ("500MB", 500 * 10**6), ("2 kib", 2048)],
)
def test_sizes_read_as_the_contract_spells_them(text: str, size: int) -> None:
    """Bytes, or a number with KiB/MiB/GiB/TiB or KB/MB/GB/TB."""
    assert parse_size(text, "VMS_MIN_FREE_DISK") == size


@pytest.mark.parametrize("text", ["", "-1", "1 XB", "lots", "1GiBs"])
def test_bad_sizes_are_a_clean_error(text: str) -> None:
    """Anything else is refused with the setting's name."""
    with pytest.raises(ConfigError, match="VMS_MIN_FREE_DISK"):
        parse_size(text, "VMS_MIN_FREE_DISK")


def test_unknown_vms_variables_are_named() -> None:
    """VMS_PROT (a typo of VMS_PORT) is reported; known ones and other variables are not."""
    env = {"VMS_PROT": "1", "VMS_PORT": "8080", "HOME": "/root", "VMS_": "x"}
    assert unknown_environment(env) == ["VMS_", "VMS_PROT"]


async def test_the_service_warns_about_a_typo_and_logs_that_it_stopped(tmp_path: Path) -> None:
    """A real `serve` with VMS_PROT set warns by name; SIGTERM logs the stop and exits 0."""
    log = tmp_path / "stderr.txt"
    service = Service(tmp_path / "data", free_port(), VMS_PROT="1")
    service.log = log
    await service.start()
    assert service.kill(signal.SIGTERM) == 0
    text = log.read_text()
    assert "VMS_PROT is not a setting and is ignored" in text
    assert "stopping" in text and "stopped" in text
