"""A range with recording gaps: one file holding every recorded span, gaps skipped.

MediaMTX's /get stops at the first gap, so the service asks /list for the range and fetches
each recorded span; the pieces are joined into one fragmented MP4 with continuous time.
"""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import av
import pytest

from tests.archive.conftest import Recordings
from tests.support.badserver import BadMediaServer, StopAtGap
from tests.support.service import (
    PHONE,
    Client,
    Footage,
    bearer,
    login,
    rfc3339,
    wait_status,
)
from vms import appkeys
from vms.mediaserver.synthetic import decode_stripe, write_segment


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def _ask(
    service: Client, user: str, camera: int, start: datetime, end: datetime
) -> tuple[dict[str, Any], int]:
    """Ask for an archive as `user`'s phone: the login answer and the download's id."""
    phone = await login(service, user, device=PHONE, x_client="ios-cctv")
    response = await service.get(
        f"/api/v1/cameras/{camera}/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(end)},
        headers=bearer(phone, PHONE, "ios-cctv"),
    )
    assert response.status == 202, await response.text()
    download_id: int = (await response.json())["download"]["id"]
    return phone, download_id


async def _finished(
    service: Client, user: str, camera: int, start: datetime, end: datetime
) -> dict[str, Any]:
    """Ask for an archive as a phone and wait until it is ready or failed: the DOWNLOAD."""
    phone, download_id = await _ask(service, user, camera, start, end)
    return await wait_status(service, phone, download_id, {"ready", "failed"}, timeout=60)


async def _archive(
    service: Client, user: str, camera: int, start: datetime, end: datetime
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Ask for an archive as a phone and wait: the DOWNLOAD, the manifest's claims, the file."""
    phone, download_id = await _ask(service, user, camera, start, end)
    ready = await wait_status(service, phone, download_id, {"ready", "failed"}, timeout=60)
    assert ready["status"] == "ready", ready
    token = await (
        await service.get(
            f"/api/v1/downloads/{download_id}/manifest", headers=bearer(phone, PHONE, "ios-cctv")
        )
    ).text()
    return ready, _claims(token), service.app[appkeys.FILES].path(download_id)


def _frames(path: Path) -> tuple[list[float], list[datetime], tuple[int, int]]:
    """Presentation times (s), the recorded moment each frame shows, and the picture size."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, moments = [], []
        for frame in container.decode(stream):
            assert frame.pts is not None and frame.time_base is not None
            times.append(float(frame.pts * frame.time_base))
            moments.append(decode_stripe(frame))
        return times, moments, (stream.width, stream.height)


def _seconds(claims_entry: dict[str, Any], origin: datetime) -> tuple[float, float]:
    start = datetime.fromisoformat(claims_entry["start"].replace("Z", "+00:00"))
    return (start - origin).total_seconds(), claims_entry["duration"]


async def test_an_archive_across_a_gap_holds_every_recorded_span(
    service: Client, footage: Footage
) -> None:
    """Camera 2 misses minute 3: 30 s before it and 30 s after it, in one playable file whose
    clock runs on across the gap; the manifest lists both spans and the gap between."""
    origin = footage.start
    ready, claims, path = await _archive(
        service, "bob", 2, origin + timedelta(seconds=150), origin + timedelta(seconds=270)
    )
    times, moments, _ = _frames(path)
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert max(steps) < 0.25 and min(steps) > 0  # 5 fps, no jump at the gap
    recorded = [(m - origin).total_seconds() for m in moments]
    assert 149.5 <= recorded[0] <= 150.5 and 269 <= recorded[-1] < 270
    assert not [s for s in recorded if 180 <= s < 240]  # nothing from the gap
    assert any(s < 180 for s in recorded) and any(s >= 240 for s in recorded)
    assert 59 <= ready["duration"] <= 61.5

    first, second = claims["spans"]
    assert _seconds(first, origin)[0] == 150 and 29.5 <= first["duration"] <= 30.5
    begin, seconds = _seconds(second, origin)
    assert 240 <= begin < 240.01 and 29.5 <= seconds <= 30.5
    (gap,) = claims["gaps"]
    gap_start, gap_seconds = _seconds(gap, origin)
    assert 179.5 <= gap_start <= 180.5 and 59.5 <= gap_seconds <= 60.5
    assert claims["size"] == path.stat().st_size == ready["size"]


def _write(recordings: Recordings, start: datetime, seconds: int, size: tuple[int, int]) -> None:
    write_segment(recordings.root / "camera1", "Gate", start, seconds, fps=5, size=size)


def _stream_changes(recordings: Recordings) -> datetime:
    """Three recordings with gaps: a new stream with the same picture after the first, then
    another picture size; when they start."""
    origin = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    _write(recordings, origin, 20, (320, 180))
    _write(recordings, origin + timedelta(seconds=30), 20, (320, 180))
    _write(recordings, origin + timedelta(seconds=60), 20, (640, 360))
    return origin


async def test_a_new_stream_and_another_picture_size_after_gaps_are_all_in_the_file(
    service: Client, own_recordings: Recordings
) -> None:
    """The new stream follows the first; the other picture size too, its parameter sets
    carried in-band: every frame at its place and size, three spans and two gaps listed."""
    origin = _stream_changes(own_recordings)
    ready, claims, path = await _archive(
        service, "alice", 1, origin + timedelta(seconds=5), origin + timedelta(seconds=79)
    )
    times, moments, _ = _frames(path)
    recorded = [(m - origin).total_seconds() for m in moments]
    assert recorded[0] < 5.5 and 78 <= recorded[-1] < 79
    assert recorded == sorted(recorded)
    assert not [s for s in recorded if 20 <= s < 30 or 50 <= s < 60]
    assert max(b - a for a, b in itertools.pairwise(times)) < 0.25
    assert 52 <= ready["duration"] <= 55.5
    assert [round(_seconds(s, origin)[0]) for s in claims["spans"]] == [5, 30, 60]
    assert [round(_seconds(g, origin)[0]) for g in claims["gaps"]] == [20, 50]
    with av.open(str(path)) as container:
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    assert sizes.index((640, 360)) == len([s for s in recorded if s < 60])
    assert set(sizes) == {(320, 180), (640, 360)}


async def test_an_archive_of_a_range_starting_in_a_gap_starts_at_the_first_recording(
    service: Client, footage: Footage
) -> None:
    """Asked from inside camera 2's gap, the file starts at the next recorded moment."""
    origin = footage.start
    _, claims, path = await _archive(
        service, "bob", 2, origin + timedelta(seconds=200), origin + timedelta(seconds=260)
    )
    _, moments, _ = _frames(path)
    assert 240 <= (moments[0] - origin).total_seconds() < 240.5
    (span,) = claims["spans"]
    assert 240 <= _seconds(span, origin)[0] < 240.01
    (gap,) = claims["gaps"]
    gap_start, gap_seconds = _seconds(gap, origin)
    assert gap_start == 200 and 40 <= gap_seconds < 40.01


async def test_with_a_media_server_that_stops_at_gaps_every_span_is_still_there(
    service: Client, footage: Footage, stop_at_gap: StopAtGap, tmp_path: Path
) -> None:
    """Behind a /get that stops at the first gap (MediaMTX), one /get of the range would hold
    the first span only; the archive asks for each span and holds both."""
    origin = footage.start
    start, end = origin + timedelta(seconds=150), origin + timedelta(seconds=270)
    _, claims, path = await _archive(service, "bob", 2, start, end)
    assert len(claims["spans"]) == 2
    assert len(stop_at_gap.gets) == 2  # one /get per span
    _, moments, _ = _frames(path)
    assert any((m - origin).total_seconds() >= 240 for m in moments)

    # the same server asked once for the whole range: the footage after the gap is missing
    answer = await login(service, "bob")
    response = await service.get(
        "/api/v1/cameras/2/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(end)},
        headers=bearer(answer),
    )
    link = (await response.json())["link"]
    whole = tmp_path / "one-get.mp4"
    async with aiohttp.ClientSession() as http, http.get(link) as got:
        assert got.status == 200
        whole.write_bytes(await got.read())
    _, moments, _ = _frames(whole)
    assert max((m - origin).total_seconds() for m in moments) < 181


async def test_a_thick_link_into_a_gap_starts_at_the_first_recorded_moment(
    service: Client, footage: Footage, stop_at_gap: StopAtGap, tmp_path: Path
) -> None:
    """From inside camera 2's gap a /get at `from` would be 404 on MediaMTX; the link starts
    where the recording does, and plays."""
    origin = footage.start
    answer = await login(service, "bob")
    response = await service.get(
        "/api/v1/cameras/2/archive/link",
        params={
            "from": rfc3339(origin + timedelta(seconds=200)),
            "to": rfc3339(origin + timedelta(seconds=260)),
        },
        headers=bearer(answer),
    )
    assert response.status == 200, await response.text()
    query = parse_qs(urlsplit((await response.json())["link"]).query)
    begin = datetime.fromisoformat(query["start"][0].replace("Z", "+00:00"))
    assert 240 <= (begin - origin).total_seconds() < 240.01
    assert 19.99 < float(query["duration"][0]) <= 20
    clip = tmp_path / "link.mp4"
    async with aiohttp.ClientSession() as http, http.get((await response.json())["link"]) as got:
        assert got.status == 200
        clip.write_bytes(await got.read())
    _, moments, _ = _frames(clip)
    assert 240 <= (moments[0] - origin).total_seconds() < 240.5
    # the history keeps the range asked for, and the link it hands out again starts there too
    listing = await service.get("/api/v1/downloads", headers=bearer(answer))
    (record,) = (await listing.json())["data"]
    assert record["from"].endswith(f"{origin + timedelta(seconds=200):%H:%M:%S}")
    again = parse_qs(urlsplit(record["url"]).query)
    assert again["start"] == query["start"] and again["duration"] == query["duration"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("ok", "The media server sent a video that is not fragmented MP4."),
        ("garbage", "The media server sent a video without a movie header."),
    ],
)
async def test_spans_that_cannot_be_joined_fail_the_archive_cleanly(
    service: Client, footage: Footage, bad_camera: BadMediaServer, mode: str, message: str
) -> None:
    """A media server whose pieces are not fragmented MP4, or not MP4 at all: the archive
    fails saying so, and no partial file is left."""
    start = footage.start + timedelta(seconds=30)
    bad_camera.listing = [(start, 10.0), (start + timedelta(seconds=20), 10.0)]
    bad_camera.mode = mode
    failed = await _finished(service, "alice", 1, start, start + timedelta(seconds=30))
    assert (failed["status"], failed["message"]) == ("failed", message)
    assert not list(service.app[appkeys.FILES].root.glob("*.part"))


async def test_a_list_of_too_many_spans_is_refused(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """A /list of thousands of slivers is not fetched piece by piece: the archive fails."""
    start = footage.start + timedelta(seconds=30)
    bad_camera.listing = [(start + timedelta(seconds=n * 0.05), 0.02) for n in range(1001)]
    failed = await _finished(service, "alice", 1, start, start + timedelta(seconds=60))
    assert failed["message"] == "The media server listed more than 1000 recorded spans."
    assert bad_camera.get_requests == 0
