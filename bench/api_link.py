"""Thick-link endpoint throughput and p99 against a hello-world aiohttp handler, in one run.

Usage: python bench/api_link.py [--seconds 10] [--connections 32 64]
Needs wrk (Debian package `wrk`). Prints both rates, the ratio and the service's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from datetime import timedelta
from pathlib import Path

from common import free_port, require_tools, rss_mb, wait_port, write_footage

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))


HELLO = """
from aiohttp import web
async def hello(request):
    return web.json_response({"link": "hello"})
app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), print=None,
            access_log=None)
"""


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> tuple[float, float]:
    """Requests per second and p99 latency in ms from one wrk run."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    match = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    assert match, output
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} error responses\n{output}")
    return rate, float(match.group(1)) * scale


def main() -> None:
    """Run both servers, measure both, print the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    require_tools("wrk")
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    data = work / "data"
    start = write_footage(data, 10)
    port, media_port, hello_port = free_port(), free_port(), free_port()
    env = {**os.environ, "VMS_DATA_DIR": str(data), "VMS_PORT": str(port)}
    env |= {"VMS_MEDIA_PORT": str(media_port), "VMS_DEMO_CAMERAS": "false"}
    subprocess.run(
        [python, "server.py", "camera", "add", "1", "--name", "Gate", "--path", "camera1"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [python, "server.py", "user", "add", "bench", "--password", "bench-password", "--admin"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    service = subprocess.Popen(
        [python, "server.py", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hello = subprocess.Popen([python, "-c", HELLO, str(hello_port)])
    try:
        wait_port(port)
        wait_port(hello_port)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/token",
            data=json.dumps({"login": "bench", "password": "bench-password"}).encode(),
            headers={"Content-Type": "application/json", "X-Client": "thick-legal", "X-UUID": "b"},
        )
        with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback only
            token = json.load(response)["access_token"]
        frm = (start + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        to = (start + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
        link = f"http://127.0.0.1:{port}/api/v1/cameras/1/archive/link?from={frm}&to={to}"
        headers = {"Authorization": f"Bearer {token}", "X-Client": "thick-legal", "X-UUID": "b"}
        hello_url = f"http://127.0.0.1:{hello_port}/"
        wrk(link, 2, 32, headers)  # warm-up
        wrk(hello_url, 2, 32, {})
        rss = [rss_mb(service.pid)]
        results = []
        for connections in args.connections:
            base_rate, base_p99 = wrk(hello_url, args.seconds, connections, {})
            rate, p99 = wrk(link, args.seconds, connections, headers)
            rss.append(rss_mb(service.pid))
            results.append((connections, base_rate, base_p99, rate, p99))
    finally:
        for process in (service, hello):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.seconds} s per run, wrk -t2, same machine, one run each")
    for connections, base_rate, base_p99, rate, p99 in results:
        print(f"{connections} connections:")
        print(f"  hello-world aiohttp: {base_rate:9.0f} req/s  p99 {base_p99:6.2f} ms")
        print(f"  thick archive link:  {rate:9.0f} req/s  p99 {p99:6.2f} ms")
        print(f"  ratio (link / hello): {rate / base_rate:.2f}x  (target >= 0.5x, p99 < 20 ms)")
    print("service RSS (MB) before and after each run: " + ", ".join(f"{r:.1f}" for r in rss))


if __name__ == "__main__":
    main()
