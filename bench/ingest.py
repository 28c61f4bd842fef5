"""Fetching a 1 GB archive onto disk: the service's ArchiveService against `curl -o`, one run.

Usage: python bench/ingest.py [--rounds 5] [--clip-seconds 10] [--loops 5]

Makes a real ~1 GB MP4 with Debian's ffmpeg (a 10 s 720p noisy clip, looped five times with
`-c copy -movflags +faststart`), serves it with nginx (sendfile on) as a media server whose
/get answers that file and whose /list answers one long span, and then, alternately:
- curl -o of the /get URL, and the same followed by an fsync of the file;
- the real service (`python server.py serve`) asked for an archive by an ios-cctv client:
  from the request to the .part file holding every byte (the fetch loop), and to the final
  file appearing (fetch loop + check_mp4 + fsync + rename), watched on the file system.
Prints medians, throughputs, ratios and the service's RSS growth while it fetched.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import BENCH_PASSWORD as PASSWORD
from common import api as _api
from common import bench_service, free_port, nginx_media_server, require_tools, rss_mb

DEVICE = "bench-phone"

api = functools.partial(_api, device=DEVICE)
MB = 1_000_000


def make_mp4(work: Path, clip_seconds: int, loops: int) -> Path:
    """A real H.264 MP4 of about 210 MB per 10 s of clip, looped `loops` times."""
    clip, big = work / "clip.mp4", work / "big.mp4"
    quiet = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    source = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-vf", "noise=alls=60:allf=t"]
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-g", "50"]
    subprocess.run(
        [*quiet, *source, "-t", str(clip_seconds), *encode, "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    loop = ["-stream_loop", str(loops - 1), "-i", str(clip)]
    subprocess.run([*quiet, *loop, "-c", "copy", "-movflags", "+faststart", str(big)], check=True)
    clip.unlink()
    return big


def fsync_file(path: Path) -> None:
    """Make a file durable, as ArchiveService does before it publishes one."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def drop_written(path: Path) -> None:
    """Delete a file and flush the disk so the next round starts with clean dirty pages."""
    path.unlink(missing_ok=True)
    os.sync()


def curl_round(url: str, target: Path) -> tuple[float, float]:
    """Seconds for `curl -o`, and for `curl -o` followed by an fsync."""
    started = time.monotonic()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(target), url], check=True)
    fetched = time.monotonic()
    fsync_file(target)
    synced = time.monotonic()
    return fetched - started, synced - started


class RssWatch:
    """Samples a process's RSS every 10 ms on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def service_round(
    port: int, token: str, archives: Path, size: int, moment: datetime
) -> tuple[float, float, int]:
    """(seconds to the last byte in the .part file, seconds to the final file, download id)."""
    query = (
        f"from={moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        f"&to={(moment + timedelta(minutes=5)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    started = time.monotonic()
    queued = api(port, "GET", f"/api/v1/cameras/1/archive/link?{query}", token)
    download_id = int(queued["download"]["id"])
    partial, final = archives / f"{download_id}.mp4.part", archives / f"{download_id}.mp4"
    streamed = None
    deadline = started + 120
    while time.monotonic() < deadline:
        now = time.monotonic()
        if final.exists():
            published = now
            break
        if streamed is None:
            with_size = partial.stat().st_size if partial.exists() else 0
            if with_size >= size:
                streamed = now
        time.sleep(0.002)
    else:
        raise SystemExit(f"archive {download_id} not ready in 120 s")
    # The rename can beat the poll that would have seen the full .part: count it as streamed.
    streamed = published if streamed is None else streamed
    for _ in range(500):
        status = api(port, "GET", f"/api/v1/downloads/{download_id}", token)["data"]["status"]
        if status == "ready":
            break
        time.sleep(0.01)
    else:
        raise SystemExit(f"archive {download_id} ended as {status}")
    return streamed - started, published - started, download_id


def main() -> None:
    """Make the MP4, start nginx and the service, measure both ways, print the ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip-seconds", type=int, default=10)
    parser.add_argument("--loops", type=int, default=5)
    parser.add_argument(
        "--profile", type=Path, help="py-spy record the service into this file (collapsed stacks)"
    )
    args = parser.parse_args()
    require_tools("ffmpeg", "nginx", "curl")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    """The benchmark proper, inside a temporary directory."""
    made = time.monotonic()
    mp4 = make_mp4(work, args.clip_seconds, args.loops)
    size = mp4.stat().st_size
    print(f"made a {size / MB:.0f} MB MP4 in {time.monotonic() - made:.1f} s")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=23)
    data = work / "data"
    archives = data / "archives"
    with nginx_media_server(work, mp4, start) as media_port:
        media = f"http://127.0.0.1:{media_port}"
        service = bench_service(data, free_port(), media)
        port = service.port
        service.start_blocking()
        spy: subprocess.Popen[bytes] | None = None
        try:
            token = api(
                port, "POST", "/api/v1/token", None, {"login": "bench", "password": PASSWORD}
            )["access_token"]
            get_url = f"{media}/get?path=camera1&start=x&duration=300&format=mp4"
            # Warm-up: the file into the page cache, the service's code paths exercised once.
            curl_round(get_url, work / "curl.mp4")
            drop_written(work / "curl.mp4")
            _, _, warm_id = service_round(port, token, archives, size, start)
            drop_written(archives / f"{warm_id}.mp4")
            if args.profile:
                spy_bin = str(Path(sys.executable).parent / "py-spy")
                record = ["record", "-f", "raw", "-o", str(args.profile), "-r", "200", "--threads"]
                spy = subprocess.Popen(
                    [spy_bin, *record, "-p", str(service.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            curl_plain, curl_synced, ours_stream, ours_ready = [], [], [], []
            rss_before = rss_mb(service.pid)
            peak = rss_before
            for index in range(args.rounds):
                plain, synced = curl_round(get_url, work / "curl.mp4")
                curl_plain.append(plain)
                curl_synced.append(synced)
                drop_written(work / "curl.mp4")
                moment = start + timedelta(minutes=10 * (index + 1))
                with RssWatch(service.pid) as watch:
                    streamed, published, download_id = service_round(
                        port, token, archives, size, moment
                    )
                peak = max(peak, watch.peak)
                ours_stream.append(streamed)
                ours_ready.append(published)
                drop_written(archives / f"{download_id}.mp4")
            rss_after = rss_mb(service.pid)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            service.kill(signal.SIGTERM)
    report(size, args.rounds, curl_plain, curl_synced, ours_stream, ours_ready)
    print(
        f"service RSS: {rss_before:.1f} MB before, peak {peak:.1f} MB while fetching, "
        f"{rss_after:.1f} MB after; growth {peak - rss_before:.1f} MB (target < 50 MB)"
    )


def report(
    size: int,
    rounds: int,
    curl_plain: list[float],
    curl_synced: list[float],
    ours_stream: list[float],
    ours_ready: list[float],
) -> None:
    """Medians, throughputs and ratios."""

    def line(label: str, times: list[float]) -> float:
        median = statistics.median(times)
        spread = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {label:<44} {median:6.2f} s  {size / MB / median:7.0f} MB/s  ({spread})")
        return median

    print(f"{size / MB:.0f} MB from nginx on 127.0.0.1, {rounds} rounds each, medians:")
    plain = line("curl -o", curl_plain)
    synced = line("curl -o, then fsync", curl_synced)
    stream = line("service: request -> last byte in .part", ours_stream)
    ready = line("service: request -> checked, fsynced, renamed", ours_ready)
    print(f"  fetch loop vs curl -o:                 {plain / stream:.2f}x  (target >= 0.9x)")
    print(f"  whole fetch vs curl -o, then fsync:    {synced / ready:.2f}x")
    print(f"  whole fetch vs curl -o:                {plain / ready:.2f}x")


if __name__ == "__main__":
    main()
