"""Benchmark: an hour of footage through our /get?format=mp4 versus FFmpeg's concat + faststart.

Run `python bench/mediaserver_get.py`. It makes 60 one-minute segments once (bench/out/,
git-ignored), starts the standalone media server as its own process, and times, on the same
files and with the output written to disk in both cases:
- GET /get?format=mp4 for the whole hour over real HTTP on 127.0.0.1,
- ffmpeg -f concat -safe 0 -i LIST -c copy -movflags +faststart,
- the fmp4 time to first byte,
and reads the server's peak RSS (VmHWM) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from common import ROOT, Service, free_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.media import public_jwk
from vms.mediaserver.synthetic import write_segment

OUT = ROOT / "bench" / "out" / "mediaserver"
RECORDINGS = OUT / "recordings"
CAMERA = "bench"
T0 = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
SEGMENTS = 60
FPS = 25
SIZE = (640, 360)


def make_recordings() -> list[Path]:
    """The 60 one-minute segments, written once."""
    directory = RECORDINGS / CAMERA
    existing = sorted(directory.glob("*.mp4")) if directory.exists() else []
    if len(existing) == SEGMENTS:
        return existing
    print(f"writing {SEGMENTS} one-minute segments ({SIZE[0]}x{SIZE[1]}, {FPS} fps) ...")
    for old in existing:
        old.unlink()
    paths = []
    for index in range(SEGMENTS):
        start = T0 + timedelta(minutes=index)
        paths.append(
            write_segment(directory, "Bench", start, 60, fps=FPS, size=SIZE, gop_seconds=2.0)
        )
    return paths


def run_ffmpeg(segments: list[Path]) -> float:
    """Seconds FFmpeg takes to concat the segments into a faststart MP4."""
    listing = OUT / "concat.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in segments))
    target = OUT / "ffmpeg.mp4"
    began = time.perf_counter()
    subprocess.run(
        [
            "/usr/bin/ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(target),
        ],
        check=True,
    )
    return time.perf_counter() - began


async def fetch_to_file(session: aiohttp.ClientSession, url: str, target: Path) -> float:
    """Seconds to download `url` into `target`."""
    began = time.perf_counter()
    async with session.get(url) as response:
        response.raise_for_status()
        with target.open("wb") as handle:
            async for chunk in response.content.iter_chunked(1 << 20):
                handle.write(chunk)
    return time.perf_counter() - began


async def first_byte(session: aiohttp.ClientSession, url: str) -> float:
    """Seconds until the first body byte of `url` arrives."""
    began = time.perf_counter()
    async with session.get(url) as response:
        await response.content.readany()
        elapsed = time.perf_counter() - began
    return elapsed


def probe_duration(path: Path) -> float:
    """The duration ffprobe reads from an MP4."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)["format"]["duration"])


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set size in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(rounds: int) -> None:
    """Run the comparison and print the figures."""
    OUT.mkdir(parents=True, exist_ok=True)
    segments = make_recordings()
    key = Ed25519PrivateKey.generate()
    entry = public_jwk(key, "bench", "EdDSA")
    jwks_app = web.Application()

    async def serve_jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [entry]})

    jwks_app.router.add_get("/jwks.json", serve_jwks)
    runner = web.AppRunner(jwks_app, access_log=None)
    await runner.setup()
    jwks_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", jwks_port).start()
    token = jwt.encode(
        {
            "aud": "media-server",
            "exp": int(time.time()) + 3600,
            "mediamtx_permissions": [{"action": "playback", "path": CAMERA}],
        },
        key,
        algorithm="EdDSA",
        headers={"kid": "bench"},
    )
    server = Service(OUT / "data", free_port())
    base = f"http://127.0.0.1:{server.port}"
    start = T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    hour = f"{base}/get?path={CAMERA}&start={start}&duration=3600&format=mp4&jwt={token}"
    fmp4 = f"{base}/get?path={CAMERA}&start={start}&duration=3600&format=fmp4&jwt={token}"
    try:
        await server.start(
            "media-server", "--recordings", str(RECORDINGS), "--port", str(server.port),
            "--jwks", f"http://127.0.0.1:{jwks_port}/jwks.json",
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/list?path={CAMERA}&jwt={token}") as listed:
                assert listed.status == 200, await listed.text()
            ours, theirs, ttfb = [], [], []
            for _ in range(rounds):
                theirs.append(await asyncio.to_thread(run_ffmpeg, segments))
                ours.append(await fetch_to_file(session, hour, OUT / "ours.mp4"))
                ttfb.append(await first_byte(session, fmp4))
        rss = peak_rss_mb(server.pid)
    finally:
        if server.process is not None:
            server.kill(signal.SIGTERM)
        await runner.cleanup()
    size_mb = (OUT / "ours.mp4").stat().st_size / 1e6
    our_time, ffmpeg_time = statistics.median(ours), statistics.median(theirs)
    print(f"footage: {SEGMENTS} x 60 s, {SIZE[0]}x{SIZE[1]} {FPS} fps, archive {size_mb:.1f} MB")
    print(
        f"durations (ffprobe): ours {probe_duration(OUT / 'ours.mp4'):.2f} s, "
        f"ffmpeg {probe_duration(OUT / 'ffmpeg.mp4'):.2f} s"
    )
    print(f"ours  /get?format=mp4 (HTTP, to disk): median {our_time:.3f} s  runs {fmt(ours)}")
    print(f"ffmpeg concat + faststart:             median {ffmpeg_time:.3f} s  runs {fmt(theirs)}")
    print(f"ratio ours/ffmpeg: {our_time / ffmpeg_time:.2f}x (target <= 1.0x)")
    print(f"server peak RSS: {rss:.1f} MB (target < 200 MB)")
    print(
        f"fmp4 time to first byte: median {statistics.median(ttfb) * 1000:.1f} ms "
        f"(target < 300 ms)  runs {fmt([t * 1000 for t in ttfb])}"
    )


def fmt(values: list[float]) -> str:
    """Numbers for a line of output."""
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
