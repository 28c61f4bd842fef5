"""GET /get: the footage of a range as one MP4, joined by stream copy."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import struct
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.media import (
    CAMERA,
    FPS,
    GOP,
    TokenFactory,
    at,
    noise_segment,
    rfc3339,
    segment,
)
from tests.support.service import Client
from vms.mediaserver import remux
from vms.mediaserver.app import PLAYBACK, create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.mediaserver.index import RecordingsIndex
from vms.mediaserver.synthetic import decode_stripe

FRAME = 1 / FPS


def top_boxes(data: bytes) -> list[bytes]:
    """The types of the top-level boxes of an MP4."""
    kinds, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
        kinds.append(kind)
        pos += size
    return kinds


def decoded(data: bytes) -> tuple[list[av.VideoFrame], float]:
    """All frames of an MP4 and the duration its header states (seconds)."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        base = stream.time_base
        stated = float(stream.duration * base) if stream.duration and base else 0.0
    return frames, stated


async def fetch(
    client: Client, token: TokenFactory, start: datetime, seconds: float, fmt: str | None = None
) -> tuple[int, bytes, Any]:
    """GET /get for CAMERA; (status, body, headers)."""
    params = {"path": CAMERA, "start": rfc3339(start), "duration": str(seconds), "jwt": token()}
    if fmt is not None:
        params["format"] = fmt
    response = await client.get("/get", params=params)
    return response.status, await response.read(), response.headers


@pytest.mark.parametrize("fmt", [None, "fmp4", "mp4"])
async def test_archive_covers_the_range_from_the_keyframe_before(
    client: Client, token: TokenFactory, fmt: str | None
) -> None:
    """The archive holds the GOP at `start`, and plays from `start` to the end asked for.

    mp4 hides the lead-in with its edit list; fmp4 gives the lead-in zero duration.
    """
    start, seconds = at(5.5), 12.0
    status, body, headers = await fetch(client, token, start, seconds, fmt)
    assert status == 200
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Accept-Ranges"] == "none"
    frames, stated = decoded(body)
    stripes = [decode_stripe(f) for f in frames]
    times = [float(f.time) for f in frames]
    shown = [s for s, t in zip(stripes, times, strict=True) if fmt == "mp4" or s >= start]
    assert shown[0] == start and shown[-1] == at(17.4)
    assert len(shown) == round(seconds * FPS)
    assert stated == pytest.approx(seconds, abs=FRAME)
    if fmt != "mp4":
        lead_in = stripes[: stripes.index(start)]
        assert lead_in[0] == at(4)  # keyframes every 2 s
        assert times[: len(lead_in) + 1] == [0.0] * (len(lead_in) + 1)
    visible = times[len(frames) - len(shown) :]
    assert visible[0] == 0.0
    assert max(b - a for a, b in itertools.pairwise(visible)) == pytest.approx(FRAME)


async def test_fmp4_is_the_default_and_is_fragmented(client: Client, token: TokenFactory) -> None:
    """Without `format` the answer is fragmented MP4, as MediaMTX's default."""
    _, body, _ = await fetch(client, token, at(0), 5)
    kinds = top_boxes(body)
    assert kinds[:2] == [b"ftyp", b"moov"]
    assert b"moof" in kinds


async def test_mp4_has_its_index_first(client: Client, token: TokenFactory) -> None:
    """`format=mp4` is progressive MP4 with the moov before the mdat, and a Content-Length."""
    status, body, headers = await fetch(client, token, at(0), 25, "mp4")
    assert status == 200
    assert top_boxes(body) == [b"ftyp", b"moov", b"mdat"]
    assert int(headers["Content-Length"]) == len(body)


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_archive_stops_at_a_gap(client: Client, token: TokenFactory, fmt: str) -> None:
    """Across a gap of more than 1 s the archive ends, as MediaMTX's /get does."""
    frames, stated = decoded((await fetch(client, token, at(26), 20, fmt))[1])
    stripes = [decode_stripe(f) for f in frames if fmt == "mp4" or decode_stripe(f) >= at(26)]
    assert stripes[0] == at(26)
    assert stripes[-1] == at(30.4)
    assert not any(s >= at(30.5) for s in stripes)
    assert stated == pytest.approx(30.5 - 26, abs=FRAME)


async def test_stripe_matches_requested_range_across_segments(
    client: Client, token: TokenFactory
) -> None:
    """First and last frames of a multi-segment archive show the requested range's ends."""
    start, seconds = at(3.2), 24.0
    frames, _ = decoded((await fetch(client, token, start, seconds, "mp4"))[1])
    assert timedelta(0) <= start - decode_stripe(frames[0]) < timedelta(seconds=GOP)
    end = start + timedelta(seconds=seconds)
    assert timedelta(0) < end - decode_stripe(frames[-1]) <= timedelta(seconds=GOP)


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"start": None}, "invalid start"),
        ({"start": "2026-11-23"}, "invalid start"),
        ({"start": "2026-11-23T10:00:00"}, "invalid start"),
        ({"start": "2026-11-23T25:00:00Z"}, "invalid start"),
        ({"duration": None}, "invalid duration"),
        ({"duration": "ten"}, "invalid duration"),
        ({"duration": "1e9"}, "invalid duration"),
        ({"duration": "1e400"}, "invalid duration"),
        ({"format": "avi"}, "invalid format"),
        ({"format": "MP4"}, "invalid format"),
        ({"path": None}, "invalid path name"),
        ({"path": "../cam1"}, "invalid path name"),
        ({"path": "/cam1"}, "invalid path name"),
        ({"path": "cam1/../cam2"}, "invalid path name"),
        ({"path": "%2e%2e/cam1"}, "invalid path name"),
    ],
)
async def test_bad_parameters_are_400(
    client: Client, token: TokenFactory, params: dict[str, str | None], text: str
) -> None:
    """Each malformed parameter is refused with MediaMTX's error shape."""
    query: dict[str, str] = {"path": CAMERA, "start": rfc3339(at(0)), "duration": "5"}
    for name, value in params.items():
        if value is None:
            query.pop(name)
        else:
            query[name] = value
    query["jwt"] = token("")
    response = await client.get("/get", params=query)
    assert response.status == 400
    body = await response.json()
    assert body["status"] == "error"
    assert body["error"].startswith(text)


async def test_go_duration_strings_are_accepted(client: Client, token: TokenFactory) -> None:
    """MediaMTX's older Go-style durations (`1m30s`) still work."""
    params = {"path": CAMERA, "start": rfc3339(at(0)), "duration": "2s500ms", "jwt": token()}
    response = await client.get("/get", params=params)
    assert response.status == 200
    frames, _ = decoded(await response.read())
    assert decode_stripe(frames[-1]) == at(2.4)


@pytest.mark.parametrize(
    ("path", "start", "seconds"),
    [
        ("nobody", 0, 5),
        (CAMERA, 31, 5),  # inside the gap
        (CAMERA, 60, 5),  # after the footage
        (CAMERA, -30, 5),  # before it
    ],
)
async def test_no_footage_is_404(
    client: Client, token: TokenFactory, path: str, start: float, seconds: float
) -> None:
    """A range with nothing recorded in it is MediaMTX's 404."""
    params = {
        "path": path,
        "start": rfc3339(at(start)),
        "duration": str(seconds),
        "jwt": token(path),
    }
    response = await client.get("/get", params=params)
    assert response.status == 404
    assert await response.json() == {"status": "error", "error": "no recording segments found"}


@pytest.mark.parametrize("damage", ["garbage", "truncated-header", "bad-moof"])
async def test_damaged_segment_ends_the_archive(
    aiohttp_client: Any,
    tmp_path: Path,
    jwks: dict[str, Any],
    token: TokenFactory,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    """A damaged segment is logged and cannot be joined: the footage before it is served."""
    segment(tmp_path, CAMERA, 0, 4)
    bad = segment(tmp_path, CAMERA, 4, 4)
    segment(tmp_path, CAMERA, 8, 4)
    data = bad.read_bytes()
    if damage == "garbage":
        bad.write_bytes(bytes(range(256)) * 20)
    elif damage == "truncated-header":
        bad.write_bytes(data[:100])
    else:
        moof = data.find(b"moof") - 4
        bad.write_bytes(data[: moof + 8] + b"\xff" * 64 + data[moof + 72 :])
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    with caplog.at_level(logging.WARNING, logger="vms.mediaserver"):
        status, body, _ = await fetch(client, token, at(0), 12, "mp4")
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    assert stripes[0] == at(0) and stripes[-1] == at(3.9)
    assert len(stripes) == 4 * FPS
    assert bad.name in caplog.text
    for record in caplog.records:
        assert record.exc_info is None


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_segment_being_written_stops_at_last_complete_fragment(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory, fmt: str
) -> None:
    """A growing segment is served up to its last whole moof+mdat, never half a fragment."""
    segment(tmp_path, CAMERA, 0, 4)
    written = segment(tmp_path, "src", 4, 6)
    data = written.read_bytes()
    third = data.rfind(b"moof") - 4  # fragments at 4, 6 and 8 s
    (tmp_path / CAMERA / written.name).write_bytes(data[: third + 500])
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    status, body, _ = await fetch(client, token, at(0), 60, fmt)
    assert status == 200
    frames, _ = decoded(body)
    assert decode_stripe(frames[-1]) == at(7.9)
    assert len(frames) == 80


async def test_client_going_away_stops_the_work(
    tmp_path: Path, jwks: dict[str, Any], token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """When the client disconnects mid-download the handler ends and no remux work remains."""
    for index in range(4):
        noise_segment(tmp_path, CAMERA, index * 2, 50)
    app = create_media_app(tmp_path, StaticKeys(jwks))
    server = TestServer(app)
    async with TestClient(server) as client:
        params = {"path": CAMERA, "start": rfc3339(at(0)), "duration": "8", "jwt": token()}
        with caplog.at_level(logging.INFO, logger="vms.mediaserver"):
            response = await client.get("/get", params=params)
            assert response.status == 200
            await response.content.readexactly(100_000)
            response.close()
            for _ in range(100):
                if "went away" in caplog.text:
                    break
                await asyncio.sleep(0.05)
        assert "went away" in caplog.text
        pool = app[PLAYBACK].pool
        assert pool is not None
        busy = pool.submit(time.sleep, 0)
        await asyncio.wrap_future(busy)  # the pool is free at once: nothing still remuxing


def test_cancelled_archive_stops_reading(tmp_path: Path) -> None:
    """Setting the cancel event makes the next read stop instead of reading on."""
    for index in range(3):
        segment(tmp_path, CAMERA, index * 10, 10)
    segments = RecordingsIndex(tmp_path).segments_for_get(CAMERA, at(0), at(30))
    cancel = threading.Event()
    archive = remux.open_archive(segments, at(0), 30, "fmp4", cancel)
    assert archive.read()
    cancel.set()
    with pytest.raises(remux.Cancelled):
        archive.read()
    archive.close()


async def test_first_byte_comes_quickly(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """fmp4 starts streaming before the whole range is read."""
    for index in range(6):
        segment(tmp_path, CAMERA, index * 10, 10)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    params = {"path": CAMERA, "start": rfc3339(at(1)), "duration": "58", "jwt": token()}
    began = time.perf_counter()
    response = await client.get("/get", params=params)
    await response.content.readany()
    assert time.perf_counter() - began < 0.3
    await response.read()


async def test_unauthorised_get_is_401_before_anything_else(client: Client) -> None:
    """Without a token the answer is 401 even when the parameters are wrong too."""
    response = await client.get("/get", params={"path": CAMERA, "start": "bad"})
    assert response.status == 401
    assert await response.json() == {"status": "error", "error": "authentication error"}


def test_server_keeps_serving_after_errors() -> None:
    """The app factory builds independent apps (no shared state between servers)."""
    first = create_media_app(Path("/nonexistent"), StaticKeys({"keys": []}))
    second = create_media_app(Path("/nonexistent"), StaticKeys({"keys": []}))
    assert isinstance(first, web.Application)
    assert first[PLAYBACK] is not second[PLAYBACK]
