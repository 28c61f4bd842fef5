"""Demo cameras: synthetic recordings that backfill recent history and then grow in real time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import av

from vms.dates import as_utc, utcnow
from vms.mediaserver.mp4read import Mtxi
from vms.mediaserver.recordings import segments_in
from vms.mediaserver.synthetic import EPOCH, FrameRenderer, SegmentWriter, trim_partial_tail
from vms.threads import run_blocking

log = logging.getLogger(__name__)

# Measured on a 2-core machine: an hour of one camera at 640x360, 5 fps, x264 "superfast" encodes
# in about 13 s (two cameras in parallel 14-18 s) and takes about 28 MB; "ultrafast" takes 8 s
# but 46 MB, and the size is paid for every hour of retention while the time only once.
DEFAULT_FPS: Final = 5
DEFAULT_SIZE: Final = (640, 360)
PRESET: Final = "superfast"
CRF: Final = 32
# Frames encoded per executor call: short enough that cancelling is prompt during a backfill.
CHUNK_FRAMES: Final = 300
RETRY_DELAY: Final = 10.0


@dataclass(frozen=True)
class DemoCamera:
    """A synthetic camera: its recordings path (a directory under the root) and shown name."""

    path: str
    name: str


def recorded_end(path: Path, start: datetime) -> datetime | None:
    """Time just after the last whole frame in a segment file; None if it holds no frame."""
    end: datetime | None = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    break
                if packet.pts is None or packet.time_base is None or not packet.size:
                    continue
                stop = start + timedelta(
                    seconds=float((packet.pts + (packet.duration or 0)) * packet.time_base)
                )
                end = stop if end is None else max(end, stop)
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        # A damaged file still yields the frames read before the error.
        log.info("segment %s is damaged (%s)", path.name, exc)
    return end


def purge_old_segments(recordings: Path, now: datetime, retention: timedelta) -> int:
    """Delete segments that ended before now - retention; return how many were deleted.

    `recordings` is a recordings root or one path's directory; every directory below it is
    handled on its own. A segment ends where the next one in its directory starts, or, when a
    gap follows it, where its last frame ends. The newest segment of a directory (maybe still
    being written) is never deleted.
    """
    cutoff = as_utc(now) - retention
    directories = {path.parent for path in recordings.rglob("*.mp4")}
    removed = 0
    for directory in sorted(directories):
        segments = segments_in(directory)
        for segment, following in itertools.pairwise(segments):
            start, path, next_start = segment.start, segment.path, following.start
            if start > cutoff:
                break
            if next_start > cutoff and (recorded_end(path, start) or start) > cutoff:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
    if removed:
        log.info("purged %s demo segments older than %s", removed, cutoff.isoformat())
    return removed


class _Track:
    """One camera's recording state; every method blocks and runs in the recorder's executor.

    Frames sit on a global grid (frame k at the epoch + k/fps) and segments start at whole
    multiples of the segment length, so files from separate runs line up. As MediaMTX's
    recorder does, each run is a stream of its own: a new stream id, segments numbered from 0,
    and each segment's `mtxi` DTS counted from the run's first frame.
    """

    def __init__(
        self,
        directory: Path,
        camera: DemoCamera,
        *,
        fps: int,
        size: tuple[int, int],
        gop_seconds: float,
        segment_frames: int,
        retention: timedelta,
    ) -> None:
        self.directory = directory
        self.camera = camera
        self.fps = fps
        self.size = size
        self.gop_seconds = gop_seconds
        self.gop = max(1, round(gop_seconds * fps))
        self.segment_frames = segment_frames
        self.retention = retention
        self.renderer: FrameRenderer | None = None
        self.writer: SegmentWriter | None = None
        self.writer_index = 0  # grid index of the open segment's first frame
        self.next_index = 0  # grid index of the next frame to write
        self.stream_id = uuid.uuid4().bytes
        self.stream_index = 0  # grid index of the stream's first frame
        self.segment_number = 0

    def time_of(self, index: int) -> datetime:
        return EPOCH + timedelta(microseconds=round(index * 1_000_000 / self.fps))

    def index_at_or_after(self, moment: datetime) -> int:
        index = (as_utc(moment) - EPOCH) // timedelta(microseconds=1) * self.fps // 1_000_000
        while self.time_of(index) < moment:
            index += 1
        while self.time_of(index - 1) >= moment:
            index -= 1
        return index

    def resume(self, now: datetime, history: timedelta) -> datetime:
        """Where recording goes on: the newest segment's end, but not before now - history."""
        self.renderer = FrameRenderer(self.camera.name, self.size)
        self.directory.mkdir(parents=True, exist_ok=True)
        purge_old_segments(self.directory, now, self.retention)
        start = as_utc(now) - history
        for segment in reversed(segments_in(self.directory)):
            seg_start, path = segment.start, segment.path
            if cut := trim_partial_tail(path):
                log.info("demo segment %s: cut %s bytes left half written", path.name, cut)
            end = recorded_end(path, seg_start)
            if end is not None:
                start = max(start, end)
                break
            log.info("removing demo segment %s: it holds no frame", path.name)
            path.unlink(missing_ok=True)
        self.next_index = self.stream_index = self.index_at_or_after(start)
        return self.time_of(self.next_index)

    def advance(self, now: datetime, max_frames: int) -> bool:
        """Write the frames due by `now` (at most `max_frames`); True once nothing is due."""
        last_due = self.index_at_or_after(now)
        if self.time_of(last_due) > now:
            last_due -= 1
        budget = min(max_frames, last_due + 1 - self.next_index)
        while budget > 0:
            if self.writer is None:
                self._open()
            assert self.writer is not None
            boundary = (self.writer_index // self.segment_frames + 1) * self.segment_frames
            count = min(budget, boundary - self.next_index)
            self.writer.write_frames(count)
            self.next_index += count
            budget -= count
            if self.next_index == boundary:
                self._close_segment()
                purge_old_segments(self.directory, now, self.retention)
        return self.next_index > last_due

    def next_keyframe_time(self) -> datetime:
        """When the next fragment can be completed: the time of the next GOP's first frame."""
        if self.writer is None:
            return self.time_of(self.next_index)
        into = self.next_index - self.writer_index
        keyframe = self.writer_index + -(-into // self.gop) * self.gop
        boundary = (self.writer_index // self.segment_frames + 1) * self.segment_frames
        return self.time_of(min(keyframe, boundary))

    def close(self) -> None:
        """Finish the open segment, if any, as a complete file."""
        self._close_segment()

    def _open(self) -> None:
        assert self.renderer is not None
        self.writer_index = self.next_index
        start = self.time_of(self.next_index)
        mtxi = Mtxi(
            stream_id=self.stream_id,
            number=self.segment_number,
            dts=(self.writer_index - self.stream_index) * 1_000_000_000 // self.fps,
            ntp=(start - EPOCH) // timedelta(microseconds=1) * 1000,
        )
        self.segment_number += 1
        self.writer = SegmentWriter(
            self.directory,
            start,
            self.renderer,
            fps=self.fps,
            gop_seconds=self.gop_seconds,
            preset=PRESET,
            crf=CRF,
            mtxi=mtxi,
        )

    def _close_segment(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


class DemoRecorder:
    """Records demo cameras into a MediaMTX-style recordings tree while it runs."""

    def __init__(
        self,
        recordings: Path,
        cameras: Sequence[DemoCamera],
        *,
        history: timedelta = timedelta(hours=1),
        segment: timedelta = timedelta(seconds=60),
        retention: timedelta = timedelta(hours=24),
        fps: int = DEFAULT_FPS,
        size: tuple[int, int] = DEFAULT_SIZE,
        gop_seconds: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        segment_frames = round(segment.total_seconds() * fps)
        if fps < 1 or segment_frames < 1 or gop_seconds <= 0:
            raise ValueError("fps, segment and gop_seconds must be positive")
        if history < timedelta(0) or retention <= timedelta(0):
            raise ValueError("history must not be negative and retention must be positive")
        if len({camera.path for camera in cameras}) != len(cameras):
            raise ValueError("two demo cameras share a path")
        self.recordings = recordings
        self.cameras = tuple(cameras)
        self.history = history
        self.retention = retention
        self.fps = fps
        self.size = size
        self.gop_seconds = gop_seconds
        self.segment_frames = segment_frames
        self.clock = clock
        for camera in self.cameras:
            FrameRenderer(camera.name, size)  # refuse a bad size now, not in a retry loop
        # Set once every camera's missing history has been written.
        self.backfilled = asyncio.Event()
        self._backfilled_paths: set[str] = set()

    async def run(self) -> None:
        """Backfill each camera's missing history, then record live until cancelled."""
        if not self.cameras:
            self.backfilled.set()
            return
        executor = ThreadPoolExecutor(len(self.cameras), thread_name_prefix="demo-recorder")
        try:
            async with asyncio.TaskGroup() as group:
                for camera in self.cameras:
                    group.create_task(self._keep_recording(camera, executor))
        finally:
            # Every job has been awaited by now, so this only joins idle threads.
            executor.shutdown(wait=True)

    async def _keep_recording(self, camera: DemoCamera, executor: Executor) -> None:
        while True:
            try:
                await self._record(camera, executor)
            except (OSError, av.error.FFmpegError) as exc:
                log.error("demo camera %s stopped recording: %s; retrying", camera.path, exc)
                await asyncio.sleep(RETRY_DELAY)

    async def _record(self, camera: DemoCamera, executor: Executor) -> None:
        track = _Track(
            self.recordings / camera.path,
            camera,
            fps=self.fps,
            size=self.size,
            gop_seconds=self.gop_seconds,
            segment_frames=self.segment_frames,
            retention=self.retention,
        )
        backfilling = camera.path not in self._backfilled_paths
        try:
            now = self.clock()
            start = await run_blocking(executor, track.resume, now, self.history)
            log.info("demo camera %s: recording from %s", camera.path, start.isoformat())
            began = time.monotonic()
            while True:
                caught_up = await run_blocking(executor, track.advance, self.clock(), CHUNK_FRAMES)
                if not caught_up:
                    continue
                if backfilling:
                    backfilling = False
                    log.info(
                        "demo camera %s: backfilled %s in %.1f s",
                        camera.path,
                        track.time_of(track.next_index) - start,
                        time.monotonic() - began,
                    )
                    self._backfilled_paths.add(camera.path)
                    if len(self._backfilled_paths) == len(self.cameras):
                        self.backfilled.set()
                wait = (track.next_keyframe_time() - self.clock()).total_seconds()
                await asyncio.sleep(min(max(wait, 0.01), self.gop_seconds))
        finally:
            await run_blocking(executor, track.close)
