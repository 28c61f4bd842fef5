"""The service as a real child process, for tests that crash, signal or chain it, and benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
# How often a wait for a port tries again: starting the service takes about half a second.
PORT_POLL = 0.02


def free_port(first: int = 0) -> int:
    """A TCP port nobody listens on right now: this worker's next, or the first from `first` up."""
    if not first:
        return worker_port()
    for port in range(first, first + 100):
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {first}-{first + 99}")


def _bindable(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port now (TIME_WAIT counts as free, as for them)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _worker_ports() -> Iterator[int]:
    """Ports for this test worker only: each xdist worker scans a range of its own.

    The kernel hands out the same "free" port to two processes that ask at the same moment,
    and a test binds it a little later; separate ranges mean two workers never collide.
    `TEST_PORT_BASE` and `TEST_PORT_SPAN` move the ranges, so that test runs of two clones
    on one machine stay apart too.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = int(os.environ.get("TEST_PORT_BASE", "20000"))
    span = int(os.environ.get("TEST_PORT_SPAN", "5000"))
    base = first + (int(worker) if worker.isdigit() else 0) % 8 * span
    while True:
        yield from range(base, base + span)


_PORTS = _worker_ports()


def worker_port() -> int:
    """A port nobody listens on, from this worker's own range."""
    for _ in range(5000):
        port = next(_PORTS)
        if _bindable(port):
            return port
    raise RuntimeError("no free port in this worker's range")


def port_open(port: int) -> bool:
    """Whether something accepts on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts on 127.0.0.1:port; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(PORT_POLL)


class Service:
    """`python server.py serve` (or another command) as a child process on its own data directory.

    `env` adds or replaces VMS_* settings, e.g. `VMS_MEDIA_PORT="8554"`; set `log` to a path
    to keep its stderr; set `root` to run another checkout's server.py (a benchmark baseline).
    """

    def __init__(self, data: Path, port: int, **env: str) -> None:
        self.data = data
        self.port = port
        self.root = ROOT
        self.log: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "VMS_DATA_DIR": str(data),
            "VMS_PORT": str(port),
            "VMS_MEDIA_PORT": "0",
            "VMS_DEMO_CAMERAS": "false",
            "VMS_FETCH_BACKOFF": "0.1",
            # Test machines may have little disk; the guard has tests of its own.
            "VMS_MIN_FREE_DISK": "0",
            **env,
        }

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None
        return self.process.pid

    def cli(self, *args: str) -> str:
        """Run an admin command against the same data directory; its standard output."""
        result = subprocess.run(
            [sys.executable, "server.py", *args],
            cwd=ROOT,
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"server.py {' '.join(args)}: {result.stderr}"
        return result.stdout

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """Start `python server.py ARGS` (default `serve`) without waiting for it."""
        with open(self.log, "ab") if self.log else open(os.devnull, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "server.py", *(args or ("serve",))],
                cwd=self.root,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        return self.process

    async def start(self, *args: str) -> None:
        """Start serving and wait until the port answers, without blocking the loop."""
        process = self.spawn(*args)
        deadline = asyncio.get_running_loop().time() + 30
        while not port_open(self.port):
            if process.poll() is not None:
                raise AssertionError(f"the service exited with {process.returncode}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("service did not start")
            await asyncio.sleep(PORT_POLL)

    def start_blocking(self, *args: str) -> None:
        """Start serving and block until the port answers (for benchmarks)."""
        wait_port(self.port, process=self.spawn(*args))

    @contextmanager
    def running(self, *args: str) -> Iterator[Service]:
        """Serving for the duration of a `with` block; SIGTERM and reaped at its end."""
        self.start_blocking(*args)
        try:
            yield self
        finally:
            self.kill(signal.SIGTERM)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` and reap the process; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)
