"""Demo cameras: backfill of missing history, live growth, clean stop, and retention."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from aiohttp import web

from vms.mediaserver.demo import DemoCamera, DemoRecorder, purge_old_segments
from vms.mediaserver.recordings import segment_name, segments_in
from vms.mediaserver.synthetic import decode_stripe, write_segment


def list_segments(directory: Path) -> list[tuple[datetime, Path]]:
    """(start, path) of each segment in `directory`, oldest first."""
    return [(segment.start, segment.path) for segment in segments_in(directory)]


T0 = datetime(2026, 11, 23, 10, 0, 7, tzinfo=UTC)
SMALL = (320, 180)
GATE = DemoCamera("gate", "Gate")


class Clock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def stripe_times(directory: Path) -> list[datetime]:
    """The stripe time of every frame of every segment in a directory, in file order."""
    times: list[datetime] = []
    for _, path in list_segments(directory):
        with av.open(str(path)) as container:
            times.extend(decode_stripe(frame) for frame in container.decode(video=0))
    return times


def grid(start: datetime, end: datetime, fps: int) -> list[datetime]:
    """Every frame time from start to end inclusive at `fps`."""
    step = timedelta(seconds=1) / fps
    return [start + i * step for i in range(round((end - start) / step) + 1)]


def whole_boxes(data: bytes) -> bool:
    """True if the bytes split exactly into complete top-level MP4 boxes."""
    offset = 0
    while offset + 8 <= len(data):
        size, _ = struct.unpack_from(">I4s", data, offset)
        if size < 8:
            return False
        offset += size
    return offset == len(data)


def recorder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("demo-recorder")]


@contextlib.asynccontextmanager
async def running(recorder: DemoRecorder) -> AsyncIterator[asyncio.Task[None]]:
    """Run the recorder until the block ends, then cancel it and wait for it to stop."""
    task = asyncio.create_task(recorder.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


def recorder(root: Path, clock: Clock | None = None, **kwargs) -> DemoRecorder:
    options = {"fps": 5, "size": SMALL, "segment": timedelta(seconds=5), **kwargs}
    if clock is not None:
        options["clock"] = clock
    return DemoRecorder(root, [GATE], **options)


async def test_backfill_writes_exactly_the_missing_history(tmp_path):
    """A first start records exactly `history` up to now, in segments on whole multiples."""
    demo = recorder(tmp_path, Clock(T0), history=timedelta(seconds=20))
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 20)
    names = [path.name for _, path in list_segments(tmp_path / "gate")]
    assert names == [
        segment_name(T0 - timedelta(seconds=20)),
        "2026-11-23_09-59-50-000000.mp4",
        "2026-11-23_09-59-55-000000.mp4",
        "2026-11-23_10-00-00-000000.mp4",
        "2026-11-23_10-00-05-000000.mp4",
    ]
    assert stripe_times(tmp_path / "gate") == grid(T0 - timedelta(seconds=20), T0, 5)
    assert recorder_threads() == []


async def test_restart_backfills_only_the_gap_since_the_newest_segment(tmp_path):
    """After a restart the recording goes on from the newest segment's end, no overlap."""
    clock = Clock(T0)
    first = recorder(tmp_path, clock, history=timedelta(seconds=10))
    async with running(first):
        await asyncio.wait_for(first.backfilled.wait(), 20)
    before = {path.name: path.read_bytes() for _, path in list_segments(tmp_path / "gate")}

    clock.now = T0 + timedelta(seconds=13)
    second = recorder(tmp_path, clock, history=timedelta(hours=1))
    async with running(second):
        await asyncio.wait_for(second.backfilled.wait(), 20)

    after = {path.name: path.read_bytes() for _, path in list_segments(tmp_path / "gate")}
    assert all(after[name] == data for name, data in before.items())
    assert min(set(after) - set(before)) == segment_name(T0 + timedelta(seconds=0.2))
    assert stripe_times(tmp_path / "gate") == grid(T0 - timedelta(seconds=10), clock.now, 5)


async def test_backfill_never_reaches_back_further_than_history(tmp_path):
    """Old recordings leave a gap: only `history` before now is filled in."""
    old = write_segment(tmp_path / "gate", "Gate", T0 - timedelta(hours=2), 1, fps=5, size=SMALL)
    demo = recorder(tmp_path, Clock(T0), history=timedelta(seconds=6))
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 20)
    segments = list_segments(tmp_path / "gate")
    assert segments[0][1] == old
    assert segments[1][0] == T0 - timedelta(seconds=6)
    times = stripe_times(tmp_path / "gate")
    assert times[5:] == grid(T0 - timedelta(seconds=6), T0, 5)


async def test_resume_after_a_crash_continues_from_the_last_whole_frame(tmp_path):
    """A segment cut short mid-fragment keeps its whole GOPs and recording goes on after them."""
    start = T0 - timedelta(seconds=4)
    cut = write_segment(tmp_path / "gate", "Gate", start, 3, fps=5, size=SMALL)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 1500])  # the last GOP's fragment is now half there

    demo = recorder(tmp_path, Clock(T0), history=timedelta(hours=1))
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 20)
    segments = list_segments(tmp_path / "gate")
    assert segments[0][1] == cut
    assert segments[1][0] == start + timedelta(seconds=2)
    assert stripe_times(tmp_path / "gate") == grid(start, T0, 5)


async def test_segment_without_frames_is_replaced(tmp_path):
    """A newest segment holding no frame at all is removed and its time recorded again."""
    directory = tmp_path / "gate"
    directory.mkdir()
    empty = directory / segment_name(T0 - timedelta(seconds=3))
    empty.write_bytes(b"\x00\x00\x00\x10ftypiso6")
    demo = recorder(tmp_path, Clock(T0), history=timedelta(seconds=4))
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 20)
    assert not empty.exists()
    assert stripe_times(directory) == grid(T0 - timedelta(seconds=4), T0, 5)


async def test_live_segment_grows_and_rotates_in_real_time(tmp_path):
    """With the real clock the open file grows GOP by GOP and a new segment appears."""
    demo = DemoRecorder(
        tmp_path,
        [GATE],
        history=timedelta(seconds=1),
        segment=timedelta(seconds=2),
        fps=10,
        size=SMALL,
        gop_seconds=0.5,
    )
    sizes: dict[str, list[int]] = {}
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 20)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            _, newest = list_segments(tmp_path / "gate")[-1]
            data = newest.read_bytes()
            assert whole_boxes(data)  # a reader never meets half a fragment
            sizes.setdefault(newest.name, []).append(len(data))
            await asyncio.sleep(0.05)
        stopped_at = datetime.now(UTC)
    growing = [name for name, seen in sizes.items() if len(set(seen)) >= 3]
    assert growing, sizes
    assert len(sizes) >= 2
    times = stripe_times(tmp_path / "gate")
    assert times == grid(times[0], times[-1], 10)
    assert abs(times[-1] - stopped_at) < timedelta(seconds=1)
    assert recorder_threads() == []


async def test_cancel_during_backfill_stops_promptly_with_playable_files(tmp_path):
    """Cancelling in the middle of a long backfill returns quickly and leaves valid segments."""
    demo = recorder(tmp_path, Clock(T0), history=timedelta(hours=1), segment=timedelta(seconds=60))
    task = asyncio.create_task(demo.run())
    await asyncio.sleep(0.5)
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - began < 1.0
    assert not demo.backfilled.is_set()
    times = stripe_times(tmp_path / "gate")
    assert times and times == grid(T0 - timedelta(hours=1), times[-1], 5)
    assert recorder_threads() == []


async def test_service_keeps_answering_during_backfill(tmp_path, aiohttp_client):
    """While two cameras backfill, an aiohttp handler on the same loop still answers at once."""

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    client = await aiohttp_client(app)
    demo = DemoRecorder(
        tmp_path,
        [DemoCamera("1", "Camera 1"), DemoCamera("2", "Camera 2")],
        history=timedelta(minutes=2),
        fps=5,
        size=SMALL,
        clock=Clock(T0),
    )
    slowest = 0.0
    async with running(demo):
        while not demo.backfilled.is_set():
            began = time.monotonic()
            response = await client.get("/ping")
            assert await response.text() == "pong"
            slowest = max(slowest, time.monotonic() - began)
            await asyncio.sleep(0.02)
    assert slowest < 0.25
    for path in ("1", "2"):
        assert stripe_times(tmp_path / path)[0] == T0 - timedelta(minutes=2)


@pytest.mark.parametrize(
    "options",
    [
        {"fps": 0},
        {"segment": timedelta(0)},
        {"size": (321, 180)},
        {"size": (64, 48)},
        {"history": timedelta(seconds=-1)},
        {"retention": timedelta(0)},
        {"gop_seconds": 0},
    ],
)
def test_recorder_refuses_bad_settings(tmp_path, options):
    """Settings that cannot make a recording are refused when the recorder is built."""
    with pytest.raises(ValueError):
        recorder(tmp_path, **options)


def test_recorder_refuses_cameras_sharing_a_path(tmp_path):
    """Two demo cameras cannot write into one directory."""
    with pytest.raises(ValueError):
        DemoRecorder(tmp_path, [GATE, DemoCamera("gate", "Yard")])


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def make_segments(directory: Path, starts: list[datetime], seconds: float = 0.2) -> list[Path]:
    return [write_segment(directory, "Cam", s, seconds, fps=5, size=(128, 96)) for s in starts]


@pytest.mark.parametrize(
    ("retention_seconds", "expected_left"),
    [(3600, 5), (45, 5), (40, 4), (30.1, 4), (30, 3), (25, 3), (5, 1)],
)
def test_purge_removes_only_segments_older_than_retention(
    tmp_path, retention_seconds, expected_left
):
    """Segments that ended before now - retention go; later ones and the newest stay."""
    starts = [NOW - timedelta(seconds=s) for s in (50, 40, 30, 20, 10)]
    paths = make_segments(tmp_path / "cam", starts, seconds=10)
    removed = purge_old_segments(tmp_path, NOW, timedelta(seconds=retention_seconds))
    assert removed == 5 - expected_left
    assert [p.exists() for p in paths] == [False] * removed + [True] * expected_left


def test_purge_never_removes_the_newest_segment(tmp_path):
    """Even when everything is older than retention, each path keeps its newest segment."""
    old = NOW - timedelta(days=3)
    one = make_segments(tmp_path / "1", [old, old + timedelta(minutes=1)])
    nested = make_segments(tmp_path / "site" / "2", [old])
    assert purge_old_segments(tmp_path, NOW, timedelta(hours=1)) == 1
    assert not one[0].exists()
    assert one[1].exists() and nested[0].exists()


def test_purge_looks_at_the_last_frame_when_a_gap_follows(tmp_path):
    """A segment followed by a gap goes once its own footage is older than retention."""
    paths = make_segments(tmp_path / "cam", [NOW - timedelta(hours=3), NOW - timedelta(minutes=1)])
    assert purge_old_segments(tmp_path, NOW, timedelta(hours=1)) == 1
    assert [p.exists() for p in paths] == [False, True]
    again = make_segments(tmp_path / "cam", [NOW - timedelta(minutes=61) + timedelta(seconds=59.9)])
    assert purge_old_segments(tmp_path, NOW, timedelta(hours=1)) == 0
    assert again[0].exists()


async def test_recorder_removes_segments_past_retention(tmp_path):
    """Demo segments older than the retention are deleted while the recorder runs."""
    old = make_segments(tmp_path / "gate", [T0 - timedelta(hours=3), T0 - timedelta(hours=2)])
    demo = recorder(
        tmp_path, Clock(T0), history=timedelta(seconds=10), retention=timedelta(hours=1)
    )
    async with running(demo):
        await asyncio.wait_for(demo.backfilled.wait(), 20)
    assert not any(path.exists() for path in old)
    assert stripe_times(tmp_path / "gate") == grid(T0 - timedelta(seconds=10), T0, 5)


def test_purge_leaves_other_files_alone(tmp_path):
    """Files that are not segments are never deleted, however old the segments around them."""
    old = NOW - timedelta(days=3)
    make_segments(tmp_path / "1", [old, old + timedelta(minutes=1)])
    notes = tmp_path / "1" / "notes.mp4"
    notes.write_bytes(b"not a segment")
    other = tmp_path / "1" / "2020-01-01_00-00-00-000000.txt"
    other.write_text("x")
    assert purge_old_segments(tmp_path / "1", NOW, timedelta(hours=1)) == 1
    assert notes.exists() and other.exists()
