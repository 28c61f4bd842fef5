"""The service as a real child process, for tests that crash, signal or chain it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Service:
    """`python server.py serve` as a child process on its own data directory."""

    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "VMS_DATA_DIR": str(data),
            "VMS_PORT": str(port),
            "VMS_MEDIA_PORT": "0",
            "VMS_FETCH_BACKOFF": "0.1",
        }

    def cli(self, *args: str) -> None:
        """Run an admin command against the same data directory."""
        subprocess.run(
            [sys.executable, "server.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

    async def start(self) -> None:
        """Start serving and wait until the port answers."""
        self.process = subprocess.Popen(
            [sys.executable, "server.py", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("service did not start")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` and reap the process; its exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)
