"""The cleanup timer runs in one of the processes sharing a database at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.support.service import Client
from vms.app import create_app
from vms.config import Config

ORPHAN = "999.mp4"  # a file no download owns: the cleanup timer deletes it


def _config(data: Path, port: int) -> Config:
    return Config(
        data_dir=data,
        host="127.0.0.1",
        port=port,
        media_port=0,
        demo_cameras=False,
        cleanup_interval=0.1,
        min_free_disk=0,
    )


async def _gone(path: Path, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await asyncio.to_thread(path.exists):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_cleanup_runs_in_one_of_two_apps_and_moves_when_it_stops(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    unused_tcp_port_factory: Callable[[], int],
) -> None:
    """Two apps on one database, each with its own archive directory: only the first cleans
    its directory; once it stops, the second takes over within an interval."""
    first, second = (
        _config(tmp_path / "a", unused_tcp_port_factory()),
        _config(tmp_path / "b", unused_tcp_port_factory()),
    )
    second.data_dir.mkdir()
    (second.data_dir / "vms.sqlite3").symlink_to(first.database_path)  # one database
    client_a = await aiohttp_client(create_app(first), server_kwargs={"port": first.port})
    client_b = await aiohttp_client(create_app(second), server_kwargs={"port": second.port})
    orphans = []
    for config in (first, second):
        config.archives_dir.mkdir(parents=True, exist_ok=True)
        orphans.append(config.archives_dir / ORPHAN)
        orphans[-1].write_bytes(b"left behind")

    assert await _gone(orphans[0])
    await asyncio.sleep(10 * first.cleanup_interval)
    assert orphans[1].exists(), "the second app cleaned up while the first holds the role"
    await client_a.close()
    assert await _gone(orphans[1])
    await client_b.close()
