"""Conformance with MediaMTX 1.20's segment rules: finding, joining and placing recordings.

Each test names the MediaMTX code it mirrors (file and function, in bluenviron/mediamtx).
Segments are real H.264 made by PyAV, with or without MediaMTX's `mtxi` box; requests are
real HTTP to the embedded media server.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver.test_demo import GATE, SMALL, Clock, running
from tests.mediaserver.test_get import decoded, fetch
from tests.support.media import CAMERA, FPS, TokenFactory, at, mtxi, rfc3339, segment
from tests.support.service import Client
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.mediaserver.demo import DemoRecorder
from vms.mediaserver.mp4read import read_header
from vms.mediaserver.recordings import segments_in
from vms.mediaserver.synthetic import decode_stripe, write_mvhd_duration

FRAME = 1 / FPS
MakeClient = Callable[[Path], Any]


@pytest.fixture
def serve(aiohttp_client: Any, jwks: dict[str, Any]) -> MakeClient:
    """A media server over a recordings root of the test's own."""

    async def make(root: Path) -> Client:
        client: Client = await aiohttp_client(create_media_app(root, StaticKeys(jwks)))
        return client

    return make


async def listed(
    client: Client, token: TokenFactory, start: datetime | None = None, end: datetime | None = None
) -> tuple[int, Any]:
    """GET /list for CAMERA: (status, JSON body)."""
    params = {"path": CAMERA, "jwt": token()}
    if start is not None:
        params["start"] = rfc3339(start)
    if end is not None:
        params["end"] = rfc3339(end)
    response = await client.get("/list", params=params)
    return response.status, await response.json()


def entries(body: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(start, duration) of each /list entry."""
    return [(e["start"], e["duration"]) for e in body]


def iso(seconds: float) -> str:
    """How /list writes the time `seconds` after T0."""
    text = at(seconds).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


# /list: joining segments


async def test_list_joins_mtxi_segments_of_one_stream_across_a_name_gap(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """segment_fmp4.go segmentFMP4CanBeConcatenated: with mtxi, the same stream id and the next
    segment number join, whatever the names say (here a 2 s gap)."""
    segment(tmp_path, CAMERA, 0, 10, mtxi=mtxi(1, 4, 0))
    segment(tmp_path, CAMERA, 12, 10, mtxi=mtxi(1, 5, 10))
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    assert entries(body) == [(iso(0), 22)]


@pytest.mark.parametrize(
    ("second", "why"),
    [((2, 5, 10), "another stream"), ((1, 6, 10), "a segment number skipped")],
)
async def test_list_splits_mtxi_segments_that_do_not_follow(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, second: tuple[int, int, int], why: str
) -> None:
    """segment_fmp4.go segmentFMP4CanBeConcatenated: with mtxi, another stream id or a
    non-consecutive number is a new entry even 0.5 s after the last one ends."""
    segment(tmp_path, CAMERA, 0, 10, mtxi=mtxi(1, 4, 0))
    segment(tmp_path, CAMERA, 10.5, 10, mtxi=mtxi(*second))
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200, why
    assert entries(body) == [(iso(0), 10), (iso(10.5), 10)]


@pytest.mark.parametrize("which", ["first", "second"])
async def test_list_never_joins_a_segment_with_mtxi_to_one_without(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, which: str
) -> None:
    """segment_fmp4.go segmentFMP4CanBeConcatenated: "prev has mtxi, current does not" and the
    reverse are never concatenated."""
    segment(tmp_path, CAMERA, 0, 10, mtxi=mtxi(1, 1, 0) if which == "first" else None)
    segment(tmp_path, CAMERA, 10, 10, mtxi=mtxi(1, 2, 10) if which == "second" else None)
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    assert entries(body) == [(iso(0), 10), (iso(10), 10)]


@pytest.mark.parametrize(("gap", "joined"), [(0.5, True), (1.0, True), (1.5, False)])
async def test_list_joins_files_without_mtxi_within_one_second(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, gap: float, joined: bool
) -> None:
    """segment_fmp4.go segmentFMP4CanBeConcatenated, legacy method: without mtxi, a segment
    starting within concatenationTolerance (1 s, inclusive) of the previous end joins it."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 10 + gap, 10)
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    if joined:
        assert entries(body) == [(iso(0), 20 + gap)]
    else:
        assert entries(body) == [(iso(0), 10), (iso(10 + gap), 10)]


async def test_list_joins_legacy_files_of_the_same_codec_at_another_size(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """segment_fmp4.go segmentFMP4TracksAreEqual: the legacy rule compares track ids, time
    scales and the codec's type, not its parameters (a new resolution still joins)."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 10, 10, size=(320, 180))
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    assert entries(body) == [(iso(0), 20)]


async def test_list_splits_legacy_files_whose_tracks_differ(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """segment_fmp4.go segmentFMP4TracksAreEqual ("different init" in on_list_test.go): a
    track with another time scale is another stream, even right after the last segment."""
    segment(tmp_path, CAMERA, 0, 10)
    other = segment(tmp_path, CAMERA, 10, 10)
    data = bytearray(other.read_bytes())
    mdhd = data.find(b"mdhd")
    version = data[mdhd + 4]
    at_scale = mdhd + 4 + (20 if version == 1 else 12)
    scale = int.from_bytes(data[at_scale : at_scale + 4], "big")
    data[at_scale : at_scale + 4] = (scale * 2).to_bytes(4, "big")
    other.write_bytes(bytes(data))
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    assert [start for start, _ in entries(body)] == [iso(0), iso(10)]


async def test_list_uses_the_mvhd_duration_when_the_recorder_filled_it(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """on_list.go parseSegment and on_list_test.go TestOnListCachedDuration: a closed
    segment's duration is the mvhd's, without reading its fragments."""
    path = segment(tmp_path, CAMERA, 0, 2)
    fd = os.open(path, os.O_RDWR)
    try:
        header = read_header(fd, os.fstat(fd).st_size)
        write_mvhd_duration(fd, len(header.ftyp) + 8, 50)
    finally:
        os.close(fd)
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    assert entries(body) == [(iso(0), 50)]


# /list: trimming to start and end


async def test_list_keeps_a_zero_second_entry_when_end_is_on_a_segment_start(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """recordstore/segment.go FindSegments keeps segments starting at or before `end`, and
    on_list.go trims the last entry to `end`: one starting exactly at `end` stays, 0 s long."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 20, 10)
    status, body = await listed(await serve(tmp_path), token, at(5), at(20))
    assert status == 200
    assert entries(body) == [(iso(5), 5), (iso(20), 0)]


async def test_list_keeps_a_zero_second_entry_when_start_is_on_an_entry_end(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """on_list.go onList: the first entry is dropped only when it ends before `start`
    (time.Before is strict), so `start` exactly on its end leaves it 0 s long."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 20, 10)
    status, body = await listed(await serve(tmp_path), token, at(10))
    assert status == 200
    assert entries(body) == [(iso(10), 0), (iso(20), 10)]


async def test_list_start_in_a_gap_drops_the_entry_before_it(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """on_list_test.go TestOnList "filtered and gap": the entry before a `start` in a gap is
    removed, and the next one is listed whole."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 30, 10)
    status, body = await listed(await serve(tmp_path), token, at(15), at(100))
    assert status == 200
    assert entries(body) == [(iso(30), 10)]


async def test_list_start_after_all_footage_is_404(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """on_list_test.go TestOnList "start after duration": 404 no recording segments found."""
    segment(tmp_path, CAMERA, 0, 10)
    status, body = await listed(await serve(tmp_path), token, at(20))
    assert status == 404
    assert body == {"status": "error", "error": "no recording segments found"}


async def test_list_start_before_the_first_recording_lists_everything(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """recordstore/segment.go FindSegments and on_list_test.go "start before first": all
    segments, the first entry not moved to `start`."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 30, 10)
    status, body = await listed(await serve(tmp_path), token, at(-3600))
    assert status == 200
    assert entries(body) == [(iso(0), 10), (iso(30), 10)]


async def test_list_end_before_all_footage_is_404(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """recordstore/segment.go FindSegments: no segment starts at or before `end`, so
    ErrNoSegmentsFound, which on_list.go answers with 404."""
    segment(tmp_path, CAMERA, 0, 10)
    status, body = await listed(await serve(tmp_path), token, at(-60), at(-1))
    assert status == 404
    assert body == {"status": "error", "error": "no recording segments found"}


# Names in the local time zone


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is Central European Time for the test."""
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_segment_names_are_read_in_the_local_time_zone(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, berlin: None
) -> None:
    """recordstore/path.go Path.Decode: the name's date and time are read in time.Local
    (11:00 in Berlin in November is 10:00 UTC), and the recorder's names are local too."""
    path = segment(tmp_path, CAMERA, 0, 10)
    assert path.name == "2026-11-23_11-00-00-000000.mp4"  # T0 is 10:00 UTC
    status, body = await listed(await serve(tmp_path), token)
    assert status == 200
    assert entries(body) == [("2026-11-23T10:00:00Z", 10)]


# /get: which segments are read, where they are placed


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_get_stops_at_a_gap(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, fmt: str
) -> None:
    """on_get.go seekAndMux: the first segment that segmentFMP4CanBeConcatenated refuses (here
    a 5 s gap) ends the answer; the footage after it is not sent."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 15, 10)
    status, body, _ = await fetch(await serve(tmp_path), token, at(0), 25, fmt)
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    assert stripes[0] == at(0) and stripes[-1] == at(9.9)


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_get_stops_at_a_new_stream_even_without_a_gap(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, fmt: str
) -> None:
    """on_get.go seekAndMux with segment_fmp4.go segmentFMP4CanBeConcatenated: a new mtxi
    stream 0.5 s later is not joined, so /get ends with the first stream."""
    segment(tmp_path, CAMERA, 0, 10, mtxi=mtxi(1, 1, 0))
    segment(tmp_path, CAMERA, 10.5, 10, mtxi=mtxi(2, 1, 0))
    status, body, _ = await fetch(await serve(tmp_path), token, at(0), 20, fmt)
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    assert stripes[-1] == at(9.9)


async def test_get_joins_legacy_files_within_one_second(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """on_get.go seekAndMux, legacy method: a segment 0.5 s after the previous one is joined
    and placed by its name."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 10.5, 10)
    status, body, _ = await fetch(await serve(tmp_path), token, at(0), 20, "mp4")
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    assert at(9.9) in stripes and at(10.5) in stripes
    assert stripes[-1] == at(19.9)


async def test_get_places_mtxi_segments_by_their_dts(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """on_get.go seekAndMux: with mtxi, a segment sits at the first one's time plus the DTS
    between them, not at its name: named 2 s late, it still starts at 10 s, so 15 s of /get
    hold 5 s of it, not 3 s."""
    segment(tmp_path, CAMERA, 0, 10, mtxi=mtxi(1, 1, 0))
    segment(tmp_path, CAMERA, 12, 10, mtxi=mtxi(1, 2, 10))
    status, body, _ = await fetch(await serve(tmp_path), token, at(0), 15, "mp4")
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    second = [s for s in stripes if s >= at(12)]
    assert len(second) == 5 * FPS
    assert second[-1] == at(16.9)


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_get_start_inside_a_gap_is_404(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, fmt: str
) -> None:
    """on_get.go seekAndMux and muxer_fmp4.go/muxer_mp4.go flush: starting in a gap, the
    segment before it has no sample at or after `start` and the next one cannot be joined,
    so nothing is written: 404 no recording segments found."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 20, 10)
    status, body, _ = await fetch(await serve(tmp_path), token, at(12), 20, fmt)
    assert status == 404
    assert body == b'{"status":"error","error":"no recording segments found"}'


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_get_start_inside_the_last_frame_is_404(
    tmp_path: Path, serve: MakeClient, token: TokenFactory, fmt: str
) -> None:
    """on_get_test.go TestOnGetInMiddleOfLastSample: a start inside the last frame's duration
    has no visible sample after it: 404."""
    segment(tmp_path, CAMERA, 0, 2)
    status, _, _ = await fetch(await serve(tmp_path), token, at(2 - FRAME / 2), 3, fmt)
    assert status == 404


async def test_get_after_all_footage_is_404(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """recordstore/segment.go FindSegments keeps the last segment for a late start, and the
    muxer finds nothing to write in it: 404."""
    segment(tmp_path, CAMERA, 0, 10)
    status, _, _ = await fetch(await serve(tmp_path), token, at(60), 10, "fmp4")
    assert status == 404


async def test_get_reads_segments_starting_up_to_the_end_of_the_range(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """recordstore/segment.go FindSegments: only segments starting at or before start +
    duration are read; the archive ends at the end of the range."""
    segment(tmp_path, CAMERA, 0, 10)
    segment(tmp_path, CAMERA, 10, 10)
    status, body, _ = await fetch(await serve(tmp_path), token, at(2), 8, "mp4")
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    assert max(stripes) == at(9.9)


async def test_get_starting_before_the_first_recording_serves_it(
    tmp_path: Path, serve: MakeClient, token: TokenFactory
) -> None:
    """recordstore/segment.go FindSegments returns every segment when `start` is before the
    first, and on_get.go seekAndMux reads from the first: the footage is served."""
    segment(tmp_path, CAMERA, 0, 10)
    status, body, _ = await fetch(await serve(tmp_path), token, at(-30), 35, "mp4")
    assert status == 200
    stripes = [decode_stripe(f) for f in decoded(body)[0]]
    assert stripes[0] == at(0) and stripes[-1] == at(4.9)


# The demo recorder writes what MediaMTX's recorder writes


async def test_demo_recorder_writes_mtxi_and_the_mvhd_duration(tmp_path: Path) -> None:
    """recorder/format_fmp4_segment.go writeInit and writeDuration: one stream id per run,
    consecutive segment numbers, the DTS from the run's start, NTP the segment's time, and
    the duration filled in when a segment closes."""
    now = datetime(2026, 11, 23, 10, 0, 7, tzinfo=UTC)
    demo = DemoRecorder(
        tmp_path,
        [GATE],
        history=timedelta(seconds=12),
        segment=timedelta(seconds=5),
        fps=5,
        size=SMALL,
        clock=Clock(now),
    )
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 30)
    segments = segments_in(tmp_path / "gate")
    headers = []
    for seg in segments:
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            headers.append(read_header(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
    boxes = [h.mtxi for h in headers]
    assert all(box is not None for box in boxes)
    assert len({box.stream_id for box in boxes if box}) == 1
    assert [box.number for box in boxes if box] == list(range(len(boxes)))
    first = segments[0].start
    for seg, box in zip(segments, boxes, strict=True):
        assert box is not None
        assert box.dts == round((seg.start - first).total_seconds() * 1e9)
        assert box.ntp == round(seg.start.timestamp() * 1e6) * 1000
    assert all(h.duration > 0 for h in headers)
