"""Helpers every benchmark shares: ports, processes' memory, and JSON calls to the service."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /get {{
            default_type video/mp4;
            rewrite ^ /{name} break;
        }}
        location = /list {{
            default_type application/json;
            return 200 '{listing}';
        }}
        location /archives/ {{
            default_type video/mp4;
            alias {archives}/;
        }}
    }}
}}
"""


def require_tools(*tools: str) -> None:
    """Stop with the apt-get line to run when a Debian tool the benchmark drives is missing."""
    for tool in tools:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")


def write_footage(data: Path, minutes: int) -> datetime:
    """Small real recordings of camera1 in DATA/recordings, ending 2 minutes ago; their start."""
    from vms.mediaserver.synthetic import write_segment

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes + 2)
    camera = data / "recordings" / "camera1"
    camera.mkdir(parents=True)
    for minute in range(minutes):
        write_segment(camera, "Gate", start + timedelta(minutes=minute), 60, fps=2, size=(160, 96))
    return start


def free_port(first: int = 0) -> int:
    """A TCP port nobody listens on right now: any, or the first free one from `first` up."""
    for port in range(first, first + 100) if first else [0]:
        with socket.socket() as sock:
            # As servers bind: a port left in TIME_WAIT by an earlier run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SystemExit(f"no free port in {first}-{first + 99}")


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (2^20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def api(
    port: int,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
    *,
    device: str,
    client: str = "ios-cctv",
    timeout: float = 60.0,
) -> Any:
    """One JSON request to the service on 127.0.0.1:port as `device`."""
    headers = {"X-Client": client, "X-UUID": device, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.load(response)


@contextmanager
def nginx_media_server(
    work: Path, mp4: Path, start: datetime, archives: Path | None = None
) -> Iterator[int]:
    """nginx (sendfile on) on a loopback port playing a media server for `mp4`; its port.

    `/get` answers the file, `/list` a day-long span from `start`; with `archives`, the
    service's archive directory is served under /archives/ as the baseline for serving.
    """
    port = free_port()
    listing = json.dumps(
        [{"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration": 86400.0, "url": "x"}]
    )
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            work=work,
            port=port,
            root=mp4.parent,
            name=mp4.name,
            listing=listing,
            archives=archives or work / "no-archives",
        )
    )
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)])
    try:
        wait_port(port)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
