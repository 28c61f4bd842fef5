"""systemd's notify protocol, heard on a real datagram socket from a real `serve`."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.support.processes import Service, free_port


def _messages(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """Datagrams received until one contains `until` (or the timeout)."""
    deadline = time.monotonic() + timeout
    got: list[str] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} in {got}")


def test_ready_watchdog_and_stopping_reach_notify_socket(tmp_path: Path) -> None:
    """READY=1 once it listens, WATCHDOG=1 every half WATCHDOG_USEC, STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        service = Service(tmp_path / "data", free_port(), NOTIFY_SOCKET=str(path),
                          WATCHDOG_USEC="200000")  # fmt: skip
        service.start_blocking()
        try:
            assert any("READY=1" in m for m in _messages(sock, "READY=1"))
            pings = _messages(sock, "WATCHDOG=1")
            pings += _messages(sock, "WATCHDOG=1", timeout=1.0)
            assert sum("WATCHDOG=1" in m for m in pings) >= 2
        finally:
            service.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert _messages(sock, "STOPPING=1")
        assert service.kill(signal.SIGTERM) == 0


def test_without_notify_socket_nothing_is_sent(tmp_path: Path) -> None:
    """Outside systemd (no NOTIFY_SOCKET) the service starts and stops as before."""
    with Service(tmp_path / "data", free_port()).running() as service:
        assert service.process is not None and service.process.poll() is None
