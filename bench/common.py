"""Helpers every benchmark shares: the service and nginx as processes, memory, JSON calls.

The service itself is started by the tests' own helper (tests/support/processes.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.processes import Service, free_port, wait_port  # noqa: E402
from tests.support.service import write_footage  # noqa: E402

__all__ = ["ROOT", "Service", "free_port", "wait_port"]
BENCH_PASSWORD = "bench-password"  # noqa: S105 - a throwaway account in a temp directory
# The plain servers the service is measured against (bench/servers.py).
SERVERS = Path(__file__).resolve().parent / "servers.py"

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


def small_footage(data: Path, minutes: int) -> datetime:
    """Small real recordings of camera1 in DATA/recordings, ending 2 minutes ago; their start."""
    camera1 = (("camera1", "Gate", None),)
    footage = write_footage(
        data / "recordings", minutes, cameras=camera1, fps=2, size=(160, 96), gop_seconds=1.0
    )
    return footage.start


def bench_service(data: Path, port: int, media_server: str | None = None, **env: str) -> Service:
    """The service on DATA and `port` with camera 1 (Gate) and the admin user `bench` added.

    Camera 1 is on `media_server`, or on the embedded one when that is None.
    """
    service = Service(data, port, **env)
    camera = ["camera", "add", "1", "--name", "Gate", "--path", "camera1"]
    service.cli(*camera, *(["--media-server", media_server] if media_server else []))
    service.cli("user", "add", "bench", "--password", BENCH_PASSWORD, "--admin")
    return service


def plain_server(name: str, port: int, *args: str) -> subprocess.Popen[bytes]:
    """One of bench/servers.py's servers on 127.0.0.1:port, once it listens."""
    process = subprocess.Popen([sys.executable, str(SERVERS), name, str(port), *args], cwd=ROOT)
    wait_port(port, process=process)
    return process


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
