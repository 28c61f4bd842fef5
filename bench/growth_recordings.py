"""Benchmark: the media server at a month of one-minute segments, indexed versus re-scanned.

Usage: python bench/growth_recordings.py [--sizes 60 10080 43200] [--repeat 5]

It builds one real 60 s segment with PyAV and hard-links it under distinct names into
60 / 10,080 / 43,200 one-minute segments of one path (bench/out/growth/, git-ignored; built
once), then, for the current code ("index") and for the scan-per-request code it replaced
("scan", kept below as the baseline), each as its own server process on 127.0.0.1, prints:
- `/list` of 5 minutes, the first request after a restart (a fresh process each time),
- the same `/list` warm, and a whole-range `/list` warm (after one untimed cold one),
- a thick link's new range: `/get` of 10 s where nothing was asked before,
- the server's RSS with an empty recordings root and with the largest size, warm,
- how long a server process takes to open its ports (the index lists every path first),
- the p99 of a small API GET served by the same event loop while /list scans run, and idle.
Figures are min / median / max over `--repeat` runs; ratios are taken within this run.
The coordinator's `bench/growth.py` calls `run()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from common import ROOT, rss_mb, wait_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.media import public_jwk
from vms.mediaserver.mp4read import SegmentError, read_header, segment_duration
from vms.mediaserver.recordings import (
    CONCATENATION_TOLERANCE,
    NoSegmentsFound,
    Segment,
    parse_segment_name,
    path_dir,
    segment_name,
)
from vms.mediaserver.synthetic import write_segment

OUT = ROOT / "bench" / "out" / "growth"
PATH = "cam"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIZES = (60, 10_080, 43_200)
PORTS = range(56000, 56500)  # this benchmark's share of the machine's ports
IMPLS = ("index", "scan")


# The baseline: the scan-per-request code the index replaced (vms/mediaserver/recordings.py
# before it), with its 16,384-entry info cache, behind the index's interface.


@dataclass(frozen=True)
class _Info:
    start: datetime
    duration: float
    key: tuple[tuple[int, int, bytes], ...]


@dataclass(frozen=True)
class _Span:
    start: datetime
    duration: float


class ScanIndex:
    """Every request lists and sorts the whole directory, then walks it linearly."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: OrderedDict[tuple[str, int, int], _Info] = OrderedDict()
        self._lock = threading.Lock()

    def list_paths(self, stop: threading.Event) -> list[Any]:
        """The old code learnt nothing ahead of requests."""
        return []

    def learn_all(self, found: list[Any], stop: threading.Event) -> None:
        """The old code learnt nothing ahead of requests."""

    def _segments(self, name: str) -> list[Segment]:
        directory = path_dir(self.root, name)
        if directory is None:
            return []
        segments = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    start = parse_segment_name(entry.name)
                    if start is not None and entry.is_file(follow_symlinks=False):
                        segments.append(Segment(Path(entry.path), start))
        except FileNotFoundError:
            return []
        segments.sort(key=lambda s: s.start)
        return segments

    def segments_for_get(
        self, name: str, start: datetime | None, end: datetime | None
    ) -> list[Segment]:
        """The old find_segments."""
        segments = [s for s in self._segments(name) if end is None or s.start <= end]
        if not segments:
            raise NoSegmentsFound
        if start is not None:
            first = 0
            while first + 1 < len(segments) and segments[first + 1].start <= start:
                first += 1
            if segments[first].start > start:
                first = 0
            segments = segments[first:]
        return segments

    def _info(self, segment: Segment) -> _Info | None:
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            stat = os.fstat(fd)
            key = (str(segment.path), stat.st_size, stat.st_mtime_ns)
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
            try:
                header = read_header(fd, stat.st_size)
                duration = segment_duration(fd, stat.st_size, header, segment.path.name)
            except SegmentError:
                return None
            info = _Info(segment.start, duration, header.compat_key)
            with self._lock:
                self._cache[key] = info
                while len(self._cache) > 16384:
                    self._cache.popitem(last=False)
            return info
        finally:
            os.close(fd)

    def list_spans(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[_Span]:
        """The old list_spans: find, read every info, concatenate, trim."""
        infos = [i for s in self.segments_for_get(name, start, end) if (i := self._info(s))]
        spans: list[_Span] = []
        prev: _Info | None = None
        for info in infos:
            if spans and prev is not None and info.key == prev.key:
                last = spans[-1]
                gap = (info.start - (last.start + timedelta(seconds=last.duration))).total_seconds()
                if abs(gap) <= CONCATENATION_TOLERANCE:
                    end_ = info.start + timedelta(seconds=info.duration)
                    spans[-1] = _Span(last.start, (end_ - last.start).total_seconds())
                    prev = info
                    continue
            spans.append(_Span(info.start, info.duration))
            prev = info
        if start is not None and spans and spans[0].start < start:
            first = spans[0]
            spans[0] = _Span(start, first.duration - (start - first.start).total_seconds())
        if end is not None and spans:
            last = spans[-1]
            if last.start + timedelta(seconds=last.duration) > end:
                spans[-1] = _Span(last.start, (end - last.start).total_seconds())
        spans = [s for s in spans if s.duration > 0]
        if not spans:
            raise NoSegmentsFound
        return spans


# The server process: the media server and a small "API" route on one event loop, as in the
# service, so the API's latency shows what the media server's work costs it.


async def _serve(root: Path, port: int, api_port: int, jwks_file: Path, impl: str) -> None:
    from aiohttp import web

    from vms.mediaserver.app import PLAYBACK, create_media_app
    from vms.mediaserver.auth import StaticKeys

    jwks = json.loads(jwks_file.read_text())  # noqa: ASYNC240 - before serving anything
    media = create_media_app(root, StaticKeys(jwks))
    if impl == "scan":
        media[PLAYBACK].index = ScanIndex(root)  # type: ignore[assignment]

    async def keys(request: web.Request) -> web.Response:
        return web.json_response(jwks)

    api = web.Application()
    api.router.add_get("/.well-known/jwks.json", keys)
    runners = [web.AppRunner(media, access_log=None), web.AppRunner(api, access_log=None)]
    for runner, at in zip(runners, (port, api_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", at).start()
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


# The client side.


class Server:
    """One server process over a recordings root."""

    def __init__(self, root: Path, impl: str, key: Ed25519PrivateKey, jwks_file: Path) -> None:
        self.port, self.api_port = PORTS[0], PORTS[1]
        command = [sys.executable, __file__, "serve", str(root), str(self.port)]
        command += [str(self.api_port), str(jwks_file), impl]
        began = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=ROOT)
        wait_port(self.port, process=self.process)
        self.startup = time.perf_counter() - began  # until the media port opens
        wait_port(self.api_port, process=self.process)
        now = int(time.time())
        claims = {"aud": "media-server", "iat": now, "exp": now + 3600}
        claims["mediamtx_permissions"] = [{"action": "playback", "path": PATH}]
        self.token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"})

    def get(self, route: str, **params: str) -> tuple[float, int, bytes]:
        """(seconds, status, body) of one request to the media server."""
        query = urlencode({"path": PATH, **params, "jwt": self.token})
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{route}?{query}", timeout=600
            ) as response:
                body, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        return time.perf_counter() - began, status, body

    def api(self) -> float:
        """Seconds of one API GET on the same event loop."""
        began = time.perf_counter()
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.api_port}/.well-known/jwks.json", timeout=60
        ) as response:
            response.read()
        return time.perf_counter() - began

    def rss(self) -> float:
        """Resident memory, MB."""
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        """Stop the process and wait for it."""
        self.process.terminate()
        self.process.wait(30)


def rfc(moment: datetime) -> str:
    """RFC 3339 in UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(size: int) -> Path:
    """A recordings root with `size` one-minute segments of PATH (hard links of one)."""
    root = OUT / f"r{size}"
    directory = root / PATH
    if directory.exists() and len(os.listdir(directory)) == size:
        return root
    source = OUT / "source"
    if not source.exists():
        write_segment(source, "Bench", T0, 60, fps=2, size=(160, 96), gop_seconds=2.0)
    (real,) = list(source.glob("*.mp4"))
    directory.mkdir(parents=True, exist_ok=True)
    for old in os.listdir(directory):
        os.unlink(directory / old)
    print(f"linking {size} segments ...", flush=True)
    for minute in range(size):
        os.link(real, directory / segment_name(T0 + timedelta(minutes=minute)))
    return root


def stats(values: list[float]) -> str:
    """min / median / max in ms."""
    ms = sorted(v * 1000 for v in values)
    return f"{ms[0]:.1f} / {statistics.median(ms):.1f} / {ms[-1]:.1f}"


def p99(values: list[float]) -> float:
    """The 99th percentile, ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def measure(
    size: int, impl: str, repeat: int, key: Ed25519PrivateKey, jwks: Path
) -> dict[str, Any]:
    """Every figure of one size and one implementation."""
    root = build(size)
    middle = T0 + timedelta(minutes=size // 2)
    five = {"start": rfc(middle), "end": rfc(middle + timedelta(minutes=5))}
    out: dict[str, Any] = {"first": [], "warm": [], "whole": [], "link": [], "startup": []}
    for _ in range(repeat):
        server = Server(root, impl, key, jwks)
        out["startup"].append(server.startup)
        try:
            seconds, status, _ = server.get("/list", **five)
            assert status == 200, status
            out["first"].append(seconds)
        finally:
            server.stop()
    server = Server(root, impl, key, jwks)
    try:
        # The first whole-range /list learns every segment (for the index; the scan learns
        # into its cache what fits): what follows is warm.
        cold, status, _ = server.get("/list")
        assert status == 200, status
        out["whole_cold"] = cold
        for _ in range(repeat * 4):
            out["warm"].append(server.get("/list", **five)[0])
        for _ in range(repeat):
            out["whole"].append(server.get("/list")[0])
        for index in range(repeat):
            # A range nobody asked for, spread over the path.
            moment = T0 + timedelta(minutes=(index * 7919 + 11) % size, seconds=17)
            seconds, status, body = server.get("/get", start=rfc(moment), duration="10")
            assert status == 200 and body, status
            out["link"].append(seconds)
        out["rss"] = server.rss()
    finally:
        server.stop()
    return out


def api_under_scans(size: int, impl: str, key: Ed25519PrivateKey, jwks: Path) -> dict[str, float]:
    """The API's p99 idle, and while whole-range /lists run from a fresh start."""
    root = build(size)
    result: dict[str, float] = {}
    server = Server(root, impl, key, jwks)
    try:
        server.get("/list")  # after it, the index knows every segment: nothing runs
        time.sleep(1)
        idle = [server.api() for _ in range(300)]
        result["idle"] = p99(idle)
    finally:
        server.stop()
    server = Server(root, impl, key, jwks)
    try:
        done = threading.Event()

        def scan() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                server.get("/list")
            done.set()

        worker = threading.Thread(target=scan)
        worker.start()
        busy: list[float] = []
        while not done.is_set() and len(busy) < 5000:
            busy.append(server.api())
            time.sleep(0.01)
        worker.join()
        result["busy"] = p99(busy)
    finally:
        server.stop()
    return result


def empty_rss(key: Ed25519PrivateKey, jwks: Path) -> float:
    """RSS of a server whose recordings root has one empty path, after a /list."""
    root = OUT / "empty"
    (root / PATH).mkdir(parents=True, exist_ok=True)
    server = Server(root, "index", key, jwks)
    try:
        server.get("/list")
        return server.rss()
    finally:
        server.stop()


def run(sizes: tuple[int, ...] = SIZES, repeat: int = 5) -> dict[str, Any]:
    """Measure and print the Recordings table; returns the figures."""
    OUT.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    jwks = OUT / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "bench", "EdDSA")]}))
    results = {(s, i): measure(s, i, repeat, key, jwks) for s in sizes for i in IMPLS}
    base = empty_rss(key, jwks)
    largest = max(sizes)
    scans = {i: api_under_scans(largest, i, key, jwks) for i in IMPLS}
    print()
    print("| segments | code | /list 5 min, first after restart | warm | whole range, warm "
          "| thick link, new range (/get 10 s) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for size in sizes:
        for impl in IMPLS:
            r = results[(size, impl)]
            print(
                f"| {size:,} | {impl} | {stats(r['first'])} | {stats(r['warm'])} "
                f"| {stats(r['whole'])} (cold {r['whole_cold'] * 1000:.0f}) | {stats(r['link'])} |"
            )
    print()
    print("process start to both ports open, ms (the index lists every path first):")
    for size in sizes:
        figures = ", ".join(f"{i} {stats(results[(size, i)]['startup'])}" for i in IMPLS)
        print(f"  {size:,} segments: {figures}")
    print()
    small, big = min(sizes), largest
    for impl in IMPLS:
        warm_ratio = statistics.median(results[(big, impl)]["warm"]) / statistics.median(
            results[(small, impl)]["warm"]
        )
        print(f"{impl}: warm 5 min /list at {big:,} vs {small:,} segments: {warm_ratio:.2f}x")
    for impl in IMPLS:
        grown = results[(big, impl)]["rss"] - base
        print(f"{impl}: RSS at {big:,} segments, warm: {grown:+.1f} MB over an empty index")
    for impl in IMPLS:
        print(
            f"{impl}: API p99 idle {scans[impl]['idle']:.1f} ms, "
            f"while whole-range /list runs {scans[impl]['busy']:.1f} ms"
        )
    return {"results": results, "empty_rss": base, "api": scans}


def main() -> None:
    """Parse the arguments and run, or serve (the benchmark's own server process)."""
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        root, port, api_port, jwks_file, impl = sys.argv[2:7]
        asyncio.run(_serve(Path(root), int(port), int(api_port), Path(jwks_file), impl))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    run(tuple(args.sizes), args.repeat)


if __name__ == "__main__":
    main()
