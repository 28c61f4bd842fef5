"""Serving a finished archive: the service's signed download URL against nginx, in one run.

Usage: python bench/serve.py [--seconds 8] [--connections 1 8] [--clip-seconds 5]

Makes a real MP4 with Debian's ffmpeg (720p noise, about 105 MB for 5 s), lets the real
service (`python server.py serve`, default asyncio loop, access log on) fetch it as an archive
from nginx acting as the media server, then downloads that one file over and over with
`wrk -t2`: through the service's signed URL (signature check, a database read, FileResponse
with sendfile) and straight from nginx (one worker, sendfile on) reading the same file in
DATA/archives. Prints both throughputs and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import BENCH_PASSWORD as PASSWORD
from common import api as _api
from common import bench_service, free_port, nginx_media_server, require_tools, rss_mb

DEVICE = "bench-phone"

api = functools.partial(_api, device=DEVICE)
MB = 1_000_000


def make_mp4(work: Path, clip_seconds: int) -> Path:
    """A real H.264 MP4 of about 21 MB a second (720p noise, x264 ultrafast, crf 14)."""
    mp4 = work / "source.mp4"
    quiet = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    source = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-vf", "noise=alls=60:allf=t"]
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-g", "50"]
    output = ["-pix_fmt", "yuv420p", "-movflags", "+faststart", str(mp4)]
    subprocess.run([*quiet, *source, "-t", str(clip_seconds), *encode, *output], check=True)
    return mp4


def ready_archive(port: int, token: str, moment: datetime) -> dict[str, Any]:
    """Ask for an archive as a phone and wait until the service has it: its DOWNLOAD."""
    query = (
        f"from={moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        f"&to={(moment + timedelta(minutes=5)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    download_id = api(port, "GET", f"/api/v1/cameras/1/archive/link?{query}", token)["download"][
        "id"
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data: dict[str, Any] = api(port, "GET", f"/api/v1/downloads/{download_id}", token)["data"]
        if data["status"] == "ready":
            return data
        if data["status"] == "failed":
            raise SystemExit(f"the archive failed: {data}")
        time.sleep(0.05)
    raise SystemExit("the archive was not ready in 60 s")


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def wrk(url: str, seconds: int, connections: int, size: int) -> tuple[float, float]:
    """Whole-file downloads per second and bytes per second (MB/s) from one wrk run."""
    command = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"{url}: errors\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", output)
    assert rate and transfer, output
    per_second = float(transfer.group(1)) * _UNITS[transfer.group(2)] / MB
    # wrk counts only finished requests in Requests/sec; bytes include unfinished ones.
    return float(rate.group(1)), per_second


def fetch_whole(url: str) -> dict[str, str]:
    """Status and headers of a whole GET, with the number of body bytes it carried."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback only
        length = 0
        while block := response.read(1 << 20):
            length += len(block)
        return {"status": str(response.status), "bytes": str(length), **response.headers}


def main() -> None:
    """Make the file, start nginx and the service, measure both, print the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--clip-seconds", type=int, default=5)
    args = parser.parse_args()
    require_tools("ffmpeg", "nginx", "wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    """The benchmark proper, inside a temporary directory."""
    mp4 = make_mp4(work, args.clip_seconds)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=23)
    data = work / "data"
    archives = data / "archives"
    with nginx_media_server(work, mp4, start, archives=archives) as nginx_port:
        media = f"http://127.0.0.1:{nginx_port}"
        service = bench_service(data, free_port(), media)
        port = service.port
        with service.running():
            login = {"login": "bench", "password": PASSWORD}
            token = api(port, "POST", "/api/v1/token", None, login)["access_token"]
            download = ready_archive(port, token, start)
            ours_url = download["url"]
            nginx_url = f"{media}/archives/{download['id']}.mp4"
            size = (archives / f"{download['id']}.mp4").stat().st_size
            for url in (ours_url, nginx_url):
                answer = fetch_whole(url)
                assert answer["status"] == "200" and answer["bytes"] == str(size), answer
            rss_before = rss_mb(service.pid)
            results = []
            for connections in args.connections:
                wrk(nginx_url, 2, connections, size)  # warm-up
                wrk(ours_url, 2, connections, size)
                nginx_result = wrk(nginx_url, args.seconds, connections, size)
                ours_result = wrk(ours_url, args.seconds, connections, size)
                results.append((connections, nginx_result, ours_result))
            rss_after = rss_mb(service.pid)
    print(
        f"{size / MB:.0f} MB archive, whole-file GETs with wrk for {args.seconds} s "
        "(2 threads; 1 for 1 connection), same machine, default asyncio loop"
    )
    for connections, (nginx_rate, nginx_mb), (ours_rate, ours_mb) in results:
        print(f"{connections} connections:")
        print(f"  nginx (sendfile, 1 worker): {nginx_rate:7.2f} files/s  {nginx_mb:7.0f} MB/s")
        print(f"  service signed URL:         {ours_rate:7.2f} files/s  {ours_mb:7.0f} MB/s")
        print(f"  ratio (service / nginx):    {ours_mb / nginx_mb:.2f}x  (target >= 0.9x)")
    print(f"service RSS: {rss_before:.1f} MB before, {rss_after:.1f} MB after")


if __name__ == "__main__":
    main()
