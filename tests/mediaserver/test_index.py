"""The recordings index: kept current as segments come and go, each segment learnt once."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.media import CAMERA, TokenFactory, at, segment
from tests.support.service import Client
from vms.mediaserver.app import PLAYBACK, create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.mediaserver.index import RecordingsIndex
from vms.mediaserver.recordings import NoSegmentsFound
from vms.mediaserver.synthetic import write_mvhd_duration


async def spans(client: Client, token: TokenFactory) -> list[tuple[str, float]]:
    """(start, duration) of each /list entry for CAMERA."""
    response = await client.get("/list", params={"path": CAMERA, "jwt": token()})
    if response.status == 404:
        return []
    assert response.status == 200
    return [(e["start"], e["duration"]) for e in await response.json()]


async def test_new_and_deleted_segments_are_seen_by_the_next_request(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """A segment the recorder adds is listed, and one deleted is gone, at the next /list."""
    first = segment(tmp_path, CAMERA, 0, 4)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 4)]
    segment(tmp_path, CAMERA, 4, 4)
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 8)]
    segment(tmp_path, CAMERA, 20, 2)
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 8), ("2026-11-23T10:00:20Z", 2)]
    first.unlink()
    assert await spans(client, token) == [("2026-11-23T10:00:04Z", 4), ("2026-11-23T10:00:20Z", 2)]
    segment(tmp_path, CAMERA, -10, 2)  # an older file, copied in late, sorts into place
    assert (await spans(client, token))[0] == ("2026-11-23T09:59:50Z", 2)
    shutil.rmtree(tmp_path / CAMERA)
    assert await spans(client, token) == []


async def test_newest_segment_without_a_duration_is_read_again_as_it_grows(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """A legacy recorder's open segment (mvhd empty) is re-read when its size changes."""
    source = segment(tmp_path, "src", 0, 6)
    data = source.read_bytes()
    growing = tmp_path / CAMERA / source.name
    growing.parent.mkdir()
    second_moof = data.find(b"moof", data.find(b"moof") + 4) - 4
    growing.write_bytes(data[:second_moof])
    with growing.open("r+b") as file:
        write_mvhd_duration(file.fileno(), data.find(b"mvhd") - 4, 0)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 2)]
    with growing.open("ab") as file:
        file.write(data[second_moof:])
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 6)]


async def test_closed_segment_is_learnt_once(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """A segment whose mvhd duration is filled in is never read again once known."""
    closed = segment(tmp_path, CAMERA, 0, 4)
    segment(tmp_path, CAMERA, 4, 4)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 8)]
    size = closed.stat().st_size
    with closed.open("r+b") as file:  # damage it in place: the index does not look again
        file.write(b"\0" * size)
    assert await spans(client, token) == [("2026-11-23T10:00:00Z", 8)]
    index = client.app[PLAYBACK].index.path(CAMERA)
    assert index is not None and len(index) == 2


def test_requests_read_only_the_segments_of_their_range(tmp_path: Path) -> None:
    """A /list of 5 minutes out of 2 hours learns the 6 segments there, not the whole path."""
    source = segment(tmp_path, "src", 0, 2)
    directory = tmp_path / CAMERA
    directory.mkdir()
    for minute in range(120):
        name = f"2026-11-23_{10 + minute // 60:02d}-{minute % 60:02d}-00-000000.mp4"
        os.link(source, directory / name)
    index = RecordingsIndex(tmp_path)
    listed = index.list_spans(CAMERA, at(30 * 60), at(35 * 60))
    assert [s.start for s in listed] == [at(30 * 60 + 60 * i) for i in range(6)]
    path = index.path(CAMERA)
    assert path is not None
    assert (len(path), path.learnt) == (120, 6)


def test_warming_indexes_every_path_and_learns_its_segments(tmp_path: Path) -> None:
    """After a start, every path directory holding segments is indexed, nested ones too."""
    segment(tmp_path, "cam1", 0, 1)
    segment(tmp_path, "cam1", 1, 1)
    segment(tmp_path, "site/cam2", 0, 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "cam1" / "notes.txt").write_text("not a segment")
    index = RecordingsIndex(tmp_path)
    stop = threading.Event()
    index.learn_all(index.list_paths(stop), stop)
    learnt = {}
    for name in ("cam1", "site/cam2", "empty"):
        path = index.path(name)
        learnt[name] = path.learnt if path is not None else None
    assert learnt == {"cam1": 2, "site/cam2": 1, "empty": 0}


def test_requests_racing_a_recorder_see_a_consistent_index(tmp_path: Path) -> None:
    """While files are added and deleted, concurrent /list answers stay well formed."""
    source = segment(tmp_path, "src", 0, 2)
    directory = tmp_path / CAMERA
    directory.mkdir()
    index = RecordingsIndex(tmp_path)
    errors: list[BaseException] = []
    done = threading.Event()

    def record() -> None:
        for minute in range(200):
            name = f"2026-11-23_{10 + minute // 60:02d}-{minute % 60:02d}-00-000000.mp4"
            os.link(source, directory / name)
            if minute >= 50:
                first = min(os.listdir(directory))
                os.unlink(directory / first)
        done.set()

    def ask() -> None:
        while not done.is_set():
            try:
                for listed in (index.list_spans(CAMERA), index.list_spans(CAMERA, at(600))):
                    starts = [s.start for s in listed]
                    assert starts == sorted(starts)
            except NoSegmentsFound:
                pass
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=record), *(threading.Thread(target=ask) for _ in range(3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    time.sleep(2.1)  # past the directory's settling time: the next listing is trusted
    assert len(index.list_spans(CAMERA)) == 50


async def test_the_one_second_rule_is_exact_at_its_boundary(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """A gap of exactly 1 s joins (MediaMTX compares whole nanoseconds): no float drift."""
    segment(tmp_path, CAMERA, 0.1, 0.1)  # ends at 0.2 s
    segment(tmp_path, CAMERA, 1.2, 1)  # starts exactly 1 s later
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    assert await spans(client, token) == [("2026-11-23T10:00:00.1Z", 2.1)]


async def test_older_segment_still_being_copied_in_is_read_again(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """A file without an mvhd duration written to just now is not final, even if older."""
    segment(tmp_path, CAMERA, 60, 2)
    source = segment(tmp_path, "src", 0, 6)
    data = source.read_bytes()
    copying = tmp_path / CAMERA / source.name
    second_moof = data.find(b"moof", data.find(b"moof") + 4) - 4
    copying.write_bytes(data[:second_moof])
    with copying.open("r+b") as file:
        write_mvhd_duration(file.fileno(), data.find(b"mvhd") - 4, 0)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    assert (await spans(client, token))[0] == ("2026-11-23T10:00:00Z", 2)
    with copying.open("ab") as file:
        file.write(data[second_moof:])
    assert (await spans(client, token))[0] == ("2026-11-23T10:00:00Z", 6)
