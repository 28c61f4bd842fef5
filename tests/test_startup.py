"""Start-up faults, each with a real `server.py serve`: one line on stderr, exit 1, nothing made."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import Service, free_port
from tests.test_cli import _env, assert_clean_failure, run
from vms.store import MIGRATIONS


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """Another program listening on 127.0.0.1:port for the duration of the block."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        yield


def _only_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "password" not in result.stdout
    return lines[0]


@pytest.mark.parametrize(
    ("busy", "hint"), [("api", "VMS_PORT or --port"), ("media", "VMS_MEDIA_PORT or --media-port")]
)
def test_a_busy_port_is_one_line_and_creates_no_account(
    tmp_path: Path, busy: str, hint: str
) -> None:
    """Either port busy: the contract's one line, exit 1, no database, no operator password."""
    data = tmp_path / "data"
    api, media = free_port(), free_port()
    taken = api if busy == "api" else media
    env = _env(VMS_MEDIA_PORT=str(media), VMS_DEMO_CAMERAS="false")
    with occupied(taken):
        result = run("serve", "--data", str(data), "--port", str(api), env=env, timeout=30)
    line = _only_line(result)
    assert line == f"error: cannot listen on 127.0.0.1:{taken}: address already in use (set {hint})"
    assert not data.exists(), "a failed first start left a data directory behind"

    # The next start with the port free is a first start: the password is shown then.
    with Service(data, api, VMS_MEDIA_PORT=str(media)).running() as service:
        assert "admin" in service.cli("user", "list")


def test_a_data_directory_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    """--data naming a file: one line saying the data directory cannot be written, exit 1."""
    data = tmp_path / "data"
    data.write_text("not a directory")
    result = run("serve", "--data", str(data), "--port", str(free_port()),
                 env=_env(VMS_MEDIA_PORT="0"), timeout=30)  # fmt: skip
    assert _only_line(result).startswith(f"error: cannot write to the data directory {data}: ")
    assert data.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_read_only_data_directory_is_one_line(tmp_path: Path) -> None:
    """A data directory on a read-only file system: one line naming it, exit 1, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(data)], check=True)
    try:
        result = run("serve", "--data", str(data), "--port", str(free_port()),
                     env=_env(VMS_MEDIA_PORT="0"), timeout=30)  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
    line = _only_line(result)
    assert line == f"error: cannot write to the data directory {data}: read-only file system"


def test_a_second_server_on_one_data_directory_is_refused(tmp_path: Path) -> None:
    """A second serve on a data directory a running server holds: `DATA is in use` with its pid."""
    data = tmp_path / "data"
    with Service(data, free_port()).running() as first:
        result = run("serve", "--data", str(data), "--port", str(free_port()),
                     env=_env(VMS_MEDIA_PORT="0"), timeout=30)  # fmt: skip
        line = _only_line(result)
        assert line == f"error: {data} is in use by another server (pid {first.pid})"
        assert first.process is not None and first.process.poll() is None
    # Stopped (or killed), the directory is free again: the kernel dropped the lock.
    with Service(data, free_port()).running() as second:
        second.kill()
    with Service(data, free_port()).running():
        pass


def test_demo_cameras_follow_the_media_port(tmp_path: Path) -> None:
    """Demo cameras made on one VMS_MEDIA_PORT move with it when it changes between starts."""
    data = tmp_path / "data"
    first, second = free_port(), free_port()
    with Service(data, free_port(), VMS_MEDIA_PORT=str(first), VMS_DEMO_CAMERAS="true").running(
        "serve"
    ) as service:
        before = service.cli("camera", "list")
    assert f"http://127.0.0.1:{first}\tcamera1" in before
    with Service(data, free_port(), VMS_MEDIA_PORT=str(second), VMS_DEMO_CAMERAS="true").running(
        "serve"
    ) as service:
        after = service.cli("camera", "list").strip().splitlines()
    assert [line.split("\t")[2] for line in after] == [f"http://127.0.0.1:{second}"] * 2


def test_serving_a_newer_database_is_a_clean_error(tmp_path: Path) -> None:
    """`serve` on a database from a newer version: exit 1, an error naming it, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "vms.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    result = run("serve", "--data", str(data), "--port", str(free_port()),
                 env=_env(VMS_MEDIA_PORT="0"), timeout=30)  # fmt: skip
    assert_clean_failure(result, "newer")
    assert result.returncode == 1
    assert "password" not in result.stdout
