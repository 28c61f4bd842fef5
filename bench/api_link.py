"""Thick-link endpoint throughput and p99 against a hello-world aiohttp handler, in one run.

Usage: python bench/api_link.py [--seconds 10] [--connections 32 64]
Needs wrk (Debian package `wrk`). Prints both rates, the ratio and the service's RSS.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

from common import BENCH_PASSWORD as PASSWORD
from common import api, bench_service, free_port, plain_server, require_tools, rss_mb, small_footage


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
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    data = work / "data"
    start = small_footage(data, 10)
    port, media_port, hello_port = free_port(), free_port(), free_port()
    service = bench_service(data, port, VMS_MEDIA_PORT=str(media_port))
    hello = None
    try:
        with service.running():
            hello = plain_server("hello", hello_port)
            answer = api(
                port, "POST", "/api/v1/token", None, {"login": "bench", "password": PASSWORD},
                device="b", client="thick-legal",
            )  # fmt: skip
            token = answer["access_token"]
            frm = (start + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
            to = (start + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
            link = f"http://127.0.0.1:{port}/api/v1/cameras/1/archive/link?from={frm}&to={to}"
            headers = {
                "Authorization": f"Bearer {token}", "X-Client": "thick-legal", "X-UUID": "b"
            }  # fmt: skip
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
        if hello is not None:
            hello.send_signal(signal.SIGTERM)
            hello.wait(timeout=30)
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
