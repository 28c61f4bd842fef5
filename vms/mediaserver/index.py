"""The index of each path's recordings, kept current cheaply, answering /list and /get.

Per path it keeps the segment file names in order and, learnt once per segment, what /list and
/get need of it (its time, duration, stream and `mtxi`): a few hundred bytes a segment.

- Kept current without re-reading: a recorder adds files at the end and deletes old ones, and
  either changes the directory's mtime, so a request only stats the directory; when it has
  changed, the names are listed again and only the difference is applied. A directory changed
  within the last 2 s is listed again next time (a file may have been added in the same
  clock tick as the last listing).
- Learnt once: a segment whose mvhd duration is filled in (MediaMTX fills it when it closes a
  segment), or that has a newer segment after it and has not been written to for 10 s, is
  final and never read again; any other (the newest segment of a legacy recorder) is checked
  again by a stat, and read again only when its size or mtime changed.
- Answered by bisection over the names: names sort like their times (both are the local wall
  clock), so a request reads only the segments of its range.
- Never on the event loop: every method blocks; callers run them with `vms.threads.run_blocking`
  on the media server's bounded pool. Learning many segments pauses now and then so that the
  event loop's thread gets the interpreter (the API stays responsive while a month is read).
- After a start, every path is listed (the media port opens once that is done, or after 2 s)
  and then learnt in the background, on one thread, which waits while requests are being
  answered and works at most half the time.

The rules are MediaMTX 1.20's (`internal/recordstore/segment.go` FindSegments,
`internal/playback/on_list.go`, `on_get.go` seekAndMux, `segment_fmp4.go`
segmentFMP4CanBeConcatenated); where ours differ, the README says so.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from vms.mediaserver.mp4read import Header, SegmentError, read_header, segment_duration
from vms.mediaserver.recordings import (
    CONCATENATION_TOLERANCE,
    NoSegmentsFound,
    Segment,
    parse_segment_name,
    path_dir,
    segment_name,
)

log = logging.getLogger(__name__)

MAX_PATHS: Final = 4096
# A directory modified this recently may still gain a file within the same mtime tick.
_SETTLE_NS: Final = 2_000_000_000  # FAT keeps mtimes to 2 s
# A segment without an mvhd duration is taken as finished once a newer one exists and it has
# not been written to for this long (an older file still being copied in is not).
_QUIET_NS: Final = 10_000_000_000
# Segments learnt in one go; between chunks the interpreter is given away for a moment, so
# that the event loop's thread is not kept waiting for it while a month is read.
_CHUNK: Final = 32
_PAUSE: Final = 0.001


@dataclass(frozen=True, slots=True)
class Stream:
    """What a segment's header says about its stream; equal headers share one object."""

    join_key: tuple[tuple[int, int, bytes], ...]  # MediaMTX's legacy rule compares these
    compat_key: tuple[tuple[int, int, bytes], ...]  # the exact sample descriptions
    mtxi_stream: bytes | None  # the mtxi stream id, None for files without mtxi


_UNREADABLE: Final = Stream((), (), None)


class Info:
    """What is known of one segment file."""

    __slots__ = ("dts", "duration", "final", "mtime_ns", "number", "size", "start", "stream")

    def __init__(
        self,
        start: int,
        duration: float,
        stream: Stream,
        number: int | None,
        dts: int | None,
        size: int,
        mtime_ns: int,
        final: bool,
    ) -> None:
        self.start = start  # epoch microseconds, from the file name (exact, unlike a float)
        self.duration = duration
        self.stream = stream
        self.number = number  # mtxi segment number
        self.dts = dts  # mtxi DTS in nanoseconds
        self.size = size
        self.mtime_ns = mtime_ns
        self.final = final

    @property
    def end(self) -> int:
        """Epoch microseconds just after the footage."""
        return self.start + round(self.duration * 1_000_000)


def can_be_concatenated(prev: Info, cur: Info) -> bool:
    """Whether `cur` continues `prev` (MediaMTX's segmentFMP4CanBeConcatenated).

    With `mtxi` in both: the same stream id and the next segment number, whatever the names
    say. Without it in both: the same tracks and codecs, starting within 1 s of prev's end.
    One with and one without: never.
    """
    a, b = prev.stream, cur.stream
    if a.mtxi_stream is not None and b.mtxi_stream is not None:
        return (
            a.mtxi_stream == b.mtxi_stream
            and prev.number is not None
            and cur.number == prev.number + 1
        )
    if a.mtxi_stream is not None or b.mtxi_stream is not None:
        return False
    return a.join_key == b.join_key and abs(cur.start - prev.end) <= _TOLERANCE_US


@dataclass(frozen=True)
class Span:
    """A stretch of continuous recording, as one /list entry."""

    start: datetime
    duration: float


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TOLERANCE_US: Final = round(CONCATENATION_TOLERANCE * 1_000_000)


def _moment(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=epoch_us)


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def list_entries(infos: list[Info], start: datetime | None, end: datetime | None) -> list[Span]:
    """MediaMTX's /list answer over the segments FindSegments picked: join, then trim.

    Only the first entry is trimmed to `start` (dropped when it ends before it) and only the
    last to `end`, as in on_list.go; an entry may be left 0 s long there (`end` exactly on a
    segment's start), as MediaMTX leaves it. NoSegmentsFound when nothing is left.
    """
    bounds: list[list[int]] = []  # [start, end] epoch microseconds
    prev: Info | None = None
    for info in infos:
        if bounds and prev is not None and can_be_concatenated(prev, info):
            bounds[-1][1] = info.end
        else:
            bounds.append([info.start, info.end])
        prev = info
    if not bounds:
        raise NoSegmentsFound
    spans = [Span(_moment(b[0]), (b[1] - b[0]) / 1_000_000) for b in bounds]
    if start is not None:
        first = spans[0]
        if first.start + timedelta(seconds=first.duration) < start:
            spans = spans[1:]
            if not spans:
                raise NoSegmentsFound
        elif first.start < start:
            spans[0] = Span(start, first.duration - (start - first.start).total_seconds())
    if end is not None:
        last = spans[-1]
        if last.start + timedelta(seconds=last.duration) > end:
            spans[-1] = Span(last.start, (end - last.start).total_seconds())
    return spans


def get_chain(directory: Path, names: list[str], infos: list[Info]) -> list[Segment]:
    """The segments one /get reads: from the first, while each continues the one before.

    MediaMTX's seekAndMux stops at the first segment it cannot join (a gap, another stream).
    Segments joined by `mtxi` are placed by their DTS from the first one; others by their
    names. Ours also stops where the sample descriptions change (another resolution), since
    the archive has the first segment's header only.
    """
    if not infos:
        raise NoSegmentsFound
    first = infos[0]
    chain = [Segment(directory / names[0], _moment(first.start))]
    prev = first
    for name, info in zip(names[1:], infos[1:], strict=True):
        if not can_be_concatenated(prev, info) or info.stream.compat_key != first.stream.compat_key:
            break
        if first.dts is not None and info.dts is not None:
            placed = first.start + (info.dts - first.dts) // 1000
        else:
            placed = info.start
        chain.append(Segment(directory / name, _moment(placed)))
        prev = info
    return chain


def _quiet(mtime_ns: int) -> bool:
    """Whether a file last written at `mtime_ns` has been left alone for a while."""
    return time.time_ns() - mtime_ns > _QUIET_NS


class PathIndex:
    """One path's segments: names in order and what has been learnt of each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._dir = str(directory)  # joined as strings: pathlib would intern every name
        self._names: list[str] = []
        self._infos: list[Info | None] = []
        self._dir_mtime: int | None = None
        self._trusted = False
        self._lock = threading.Lock()
        self._learning = threading.Lock()
        self._streams: dict[Stream, Stream] = {}

    def __len__(self) -> int:
        return len(self._names)

    @property
    def learnt(self) -> int:
        """How many segments have been read so far."""
        with self._lock:
            return sum(1 for info in self._infos if info is not None)

    def seed(self, listing: list[str], mtime: int) -> None:
        """Take a listing made elsewhere (after a stat that gave `mtime`) as the first one."""
        with self._lock:
            if self._dir_mtime is not None or self._names:
                return
            self._apply(listing)
            self._dir_mtime = mtime
            self._trusted = time.time_ns() - mtime > _SETTLE_NS

    def refresh(self) -> None:
        """Bring the names up to date: a stat when nothing changed, else one listing."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                self._names, self._infos, self._dir_mtime = [], [], None
            return
        with self._lock:
            if mtime == self._dir_mtime and self._trusted:
                return
            try:
                listing = os.listdir(self.directory)
            except (FileNotFoundError, NotADirectoryError):
                listing = []
            self._apply(listing)
            self._dir_mtime = mtime
            self._trusted = time.time_ns() - mtime > _SETTLE_NS

    def _apply(self, listing: list[str]) -> None:
        if not self._names:
            listing.sort()
            self._names, self._infos = listing, [None] * len(listing)
            return
        now, old = set(listing), set(self._names)
        removed = old - now
        if removed:
            kept = [
                (n, i) for n, i in zip(self._names, self._infos, strict=True) if n not in removed
            ]
            self._names = [n for n, _ in kept]
            self._infos = [i for _, i in kept]
        added = sorted(now - old)
        if not added:
            return
        if not self._names or added[0] > self._names[-1]:
            self._names.extend(added)
            self._infos.extend([None] * len(added))
            return
        pairs = sorted(
            [*zip(self._names, self._infos, strict=True), *((n, None) for n in added)],
            key=lambda pair: pair[0],
        )
        self._names = [n for n, _ in pairs]
        self._infos = [i for _, i in pairs]

    def window(self, start: datetime | None, end: datetime | None) -> tuple[int, int]:
        """Positions [first, stop) of the segments MediaMTX's FindSegments picks (by name)."""
        with self._lock:
            names = self._names
            stop = len(names) if end is None else bisect.bisect_right(names, segment_name(end))
            if start is None:
                return 0, stop
            at = bisect.bisect_right(names, segment_name(start), 0, stop) - 1
            while at >= 0 and parse_segment_name(names[at]) is None:
                at -= 1
            return max(at, 0), stop

    def infos(self, first: int, stop: int, *, polite: bool = False) -> tuple[list[str], list[Info]]:
        """Names and infos of the readable segments in [first, stop), learning what is missing.

        Learning goes in chunks, one thread at a time per path, each chunk looking again at
        what is known: two requests (or a request and the warm-up) never read a file twice.
        Between chunks it pauses; `polite` (the warm-up) pauses as long as it worked.
        """
        with self._lock:
            names = self._names[first:stop]
            known = self._infos[first:stop]
            newest = self._names[-1] if self._names else None
        missing = []
        for i, info in enumerate(known):
            if info is None:
                missing.append(i)
            elif not info.final:
                if self._changed(names[i], info):
                    missing.append(i)
                elif names[i] != newest and info.duration > 0 and _quiet(info.mtime_ns):
                    # Unchanged, and a newer segment has begun: finished.
                    info.final, info.size, info.mtime_ns = True, 0, 0
        for chunk in range(0, len(missing), _CHUNK):
            with self._learning:
                began = time.perf_counter()
                for i in missing[chunk : chunk + _CHUNK]:
                    name = names[i]
                    with self._lock:
                        at = self._position(name, first + i)
                        current = self._infos[at] if at >= 0 else None
                    if current is not None and current is not known[i]:
                        known[i] = current  # learnt meanwhile by another thread
                        continue
                    info = self._learn(name, newer_exists=name != newest)
                    known[i] = info
                    with self._lock:
                        at = self._position(name, first + i)
                        if at >= 0:
                            self._infos[at] = info
            if chunk + _CHUNK < len(missing):
                worked = time.perf_counter() - began
                time.sleep(max(_PAUSE, worked) if polite else _PAUSE)
        out_names, out_infos = [], []
        for name, info in zip(names, known, strict=True):
            if info is not None and info.duration > 0:
                out_names.append(name)
                out_infos.append(info)
        return out_names, out_infos

    def _position(self, name: str, guess: int) -> int:
        """Where `name` is in the names now (they may have moved), or -1. Hold the lock."""
        if 0 <= guess < len(self._names) and self._names[guess] == name:
            return guess
        at = bisect.bisect_left(self._names, name)
        return at if at < len(self._names) and self._names[at] == name else -1

    def _changed(self, name: str, info: Info) -> bool:
        try:
            stat = os.stat(os.path.join(self._dir, name))
        except OSError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != (info.size, info.mtime_ns)

    def _learn(self, name: str, *, newer_exists: bool) -> Info | None:
        """Read one segment's header (and, without an mvhd duration, its last fragment)."""
        start = parse_segment_name(name)
        if start is None:
            return None
        try:
            fd = os.open(os.path.join(self._dir, name), os.O_RDONLY)
        except OSError as exc:
            log.warning("segment %s: cannot open (%s)", name, exc.strerror)
            return None
        try:
            stat = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        try:
            header = read_header(fd, stat.st_size)
            duration = segment_duration(fd, stat.st_size, header, name)
        except (SegmentError, OSError) as exc:
            log.warning("segment %s: skipped, %s", name, exc)
            # Remembered as unreadable until the file changes, so it is not read (and
            # logged) again by every request.
            return Info(_epoch_us(start), 0.0, _UNREADABLE, None, None, stat.st_size,
                        stat.st_mtime_ns, final=False)  # fmt: skip
        finally:
            os.close(fd)
        mtxi = header.mtxi
        final = header.duration > 0 or (newer_exists and _quiet(stat.st_mtime_ns))
        return Info(
            start=_epoch_us(start),
            duration=duration,
            stream=self._stream(header),
            number=mtxi.number if mtxi else None,
            dts=mtxi.dts if mtxi else None,
            # A final segment is never looked at again: no need to keep its identity.
            size=0 if final else stat.st_size,
            mtime_ns=0 if final else stat.st_mtime_ns,
            final=final,
        )

    def _stream(self, header: Header) -> Stream:
        stream = Stream(
            header.join_key, header.compat_key, header.mtxi.stream_id if header.mtxi else None
        )
        with self._lock:
            return self._streams.setdefault(stream, stream)


class RecordingsIndex:
    """The indexes of every path under a recordings root, created as paths are asked for."""

    def __init__(self, root: Path, max_paths: int = MAX_PATHS) -> None:
        self.root = root
        self._max_paths = max_paths
        self._paths: OrderedDict[str, PathIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._requests = 0  # requests being answered now: the warm-up waits for them

    @contextmanager
    def _request(self) -> Iterator[None]:
        with self._lock:
            self._requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._requests -= 1

    def path(self, name: str) -> PathIndex | None:
        """The current index of path `name`; None when it has no directory. Blocking."""
        directory = path_dir(self.root, name)
        if directory is None:
            return None
        with self._lock:
            index = self._paths.get(name)
            if index is not None:
                self._paths.move_to_end(name)
        if index is None:
            if not directory.is_dir():
                return None
            with self._lock:
                index = self._paths.setdefault(name, PathIndex(directory))
                while len(self._paths) > self._max_paths:
                    self._paths.popitem(last=False)
        index.refresh()
        return index

    def list_spans(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[Span]:
        """The /list answer for path `name`. NoSegmentsFound when there is nothing. Blocking."""
        _, _, infos = self._window(name, start, end)
        return list_entries(infos, start, end)

    def segments_for_get(self, name: str, start: datetime, end: datetime) -> list[Segment]:
        """The segments a /get of [start, end] reads, placed in time. Blocking."""
        index, names, infos = self._window(name, start, end)
        return get_chain(index.directory, names, infos)

    def _window(
        self, name: str, start: datetime | None, end: datetime | None
    ) -> tuple[PathIndex, list[str], list[Info]]:
        """Path `name`'s index with the names and infos of its segments that may hold
        [start, end]; NoSegmentsFound when there are none."""
        with self._request():
            index = self.path(name)
            if index is None:
                raise NoSegmentsFound
            first, stop = index.window(start, end)
            if stop <= first:
                raise NoSegmentsFound
            names, infos = index.infos(first, stop)
        return index, names, infos

    def list_paths(self, stop: threading.Event) -> list[PathIndex]:
        """Index the names of every path under the root; the indexes, for `learn_all`.

        Each directory is listed once: that listing is the path's first index.
        """
        found: list[PathIndex] = []
        for name, directory, listing, mtime in _walk(self.root.resolve(), self._max_paths):
            if stop.is_set():
                break
            if path_dir(self.root, name) != directory:
                continue  # not a valid path name, or outside the root through a link
            with self._lock:
                index = self._paths.setdefault(name, PathIndex(directory))
            index.seed(listing, mtime)
            found.append(index)
        return found

    def learn_all(self, found: list[PathIndex], stop: threading.Event) -> None:
        """Learn every segment of the given paths, giving way to requests, until `stop`."""
        for index in found:
            for first in range(0, len(index), _CHUNK):
                # Requests go first: while one is being answered, the warm-up waits.
                while self._requests and not stop.is_set():
                    time.sleep(_PAUSE)
                if stop.is_set():
                    return
                index.infos(first, first + _CHUNK, polite=True)


def _walk(base: Path, limit: int) -> Iterator[tuple[str, Path, list[str], int]]:
    """(path name, directory, listing, mtime before listing) of directories holding segments."""
    stack = [base]
    found = 0
    while stack and found < limit:
        directory = stack.pop()
        try:
            mtime = os.stat(directory).st_mtime_ns
            listing = os.listdir(directory)
        except OSError:
            continue
        segments = False
        for name in listing:
            if name.endswith(".mp4"):  # segments are files: only other names may be folders
                segments = segments or parse_segment_name(name) is not None
            elif os.path.isdir(os.path.join(directory, name)) and not os.path.islink(
                os.path.join(directory, name)
            ):
                stack.append(directory / name)
        if segments and directory != base:
            found += 1
            yield directory.relative_to(base).as_posix(), directory, listing, mtime
