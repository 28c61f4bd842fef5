"""The command line, run as a real `python server.py …` process on a temporary data directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import PORT_POLL, ROOT
from vms.passwords import verify_password
from vms.store import MIGRATIONS, Database

SERVER = ROOT / "server.py"


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without any VMS_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python server.py ARGS` to completion; a command that hangs fails the test."""
    try:
        return subprocess.run(
            [sys.executable, str(SERVER), *args],
            cwd=ROOT,
            env=env or _env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise AssertionError(f"`{' '.join(args)}` hung for {timeout}s; stderr:\n{stderr}") from None


def assert_clean_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A non-zero exit with a readable error that names `words`, and no stack trace."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout
    for word in words:
        assert word in result.stderr, result.stderr


def test_help_lists_every_command() -> None:
    """`--help` exits 0 and names serve, user, camera and media-server."""
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "user", "camera", "media-server", "--data", "--config"):
        assert command in result.stdout, command


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("serve",), ("--host", "--port", "--data", "--config")),
        (("user", "add"), ("--password", "--admin", "--camera", "--data")),
        (("user", "list"), ("--data",)),
        (("camera", "add"), ("--name", "--media-server", "--path", "--data")),
        (("camera", "list"), ("--data",)),
        (("media-server",), ("--recordings", "--data")),
    ],
)
def test_each_command_has_help(args: tuple[str, ...], options: tuple[str, ...]) -> None:
    """Every command's `--help` lists its options, `--data` among them."""
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout, option


async def _user_hash(data: Path, login: str) -> str:
    db = await Database.open(data / "vms.sqlite3")
    try:
        found = await db.user_with_hash(login)
    finally:
        await db.close()
    assert found is not None
    return found[1]


async def test_cameras_and_users_are_managed_from_the_command_line(tmp_path: Path) -> None:
    """camera add/list, user add (--admin, --camera)/list work on --data DIR; passwords hashed."""
    data = str(tmp_path / "data")
    assert run("camera", "add", "1", "--name", "Gate", "--data", data).returncode == 0
    result = run(
        "camera", "add", "2", "--name", "Lobby", "--media-server", "http://127.0.0.1:9",
        "--path", "lobby", "--data", data,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listing = run("camera", "list", "--data", data)
    assert listing.returncode == 0
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["1", "Gate", "http://127.0.0.1:9996", "camera1"]
    assert lines[1].split("\t") == ["2", "Lobby", "http://127.0.0.1:9", "lobby"]

    added = run(
        "user", "add", "alice", "--password", "s3cret-passphrase", "--camera", "1", "--camera", "2",
        "--data", data,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "s3cret-passphrase" not in added.stdout + added.stderr
    boss = run("user", "add", "boss", "--password", "other-passphrase", "--admin", "--data", data)
    assert boss.returncode == 0, boss.stderr
    users = run("user", "list", "--data", data)
    assert users.returncode == 0
    rows = {line.split("\t")[1]: line for line in users.stdout.strip().splitlines()}
    assert set(rows) == {"alice", "boss"}
    assert re.search(r"\b1,2\b", rows["alice"])
    assert "operator" in rows["boss"] and "all" in rows["boss"]
    assert "operator" not in rows["alice"]
    assert "s3cret-passphrase" not in users.stdout

    stored = await _user_hash(Path(data), "alice")
    assert "s3cret-passphrase" not in stored
    assert verify_password("s3cret-passphrase", stored)


@pytest.mark.parametrize("login", ["alice", "ALICE"])
def test_duplicate_login_fails(tmp_path: Path, login: str) -> None:
    """Adding a login that exists (in any letter case) exits non-zero with a clear message."""
    data = str(tmp_path)
    assert (
        run("user", "add", "alice", "--password", "first-passphrase", "--data", data).returncode
        == 0
    )
    result = run("user", "add", login, "--password", "second-passphrase", "--data", data)
    assert_clean_failure(result, "exists")
    assert len(run("user", "list", "--data", data).stdout.strip().splitlines()) == 1


def test_granting_an_unknown_camera_fails(tmp_path: Path) -> None:
    """`user add --camera 9` with no camera 9 fails and creates no user."""
    data = str(tmp_path)
    result = run(
        "user", "add", "alice", "--password", "first-passphrase", "--camera", "9", "--data", data
    )
    assert_clean_failure(result, "9")
    assert run("user", "list", "--data", data).stdout.strip() == ""


def test_password_from_stdin(tmp_path: Path) -> None:
    """`--password -` reads the password from standard input."""
    data = tmp_path / "data"
    result = run(
        "user", "add", "carol", "--password", "-", "--data", str(data), stdin="piped-passphrase\n"
    )
    assert result.returncode == 0, result.stderr
    assert verify_password("piped-passphrase", asyncio.run(_user_hash(data, "carol")))


def test_bad_media_server_url_fails(tmp_path: Path) -> None:
    """`camera add --media-server` with something that is not an http(s) URL fails cleanly."""
    result = run(
        "camera", "add", "1", "--name", "Gate", "--media-server", "ftp://x", "--data", str(tmp_path)
    )
    assert_clean_failure(result, "media-server")


def test_vms_data_dir_is_honoured_and_data_flag_wins(tmp_path: Path) -> None:
    """Without --data the commands use VMS_DATA_DIR; with --data the flag wins."""
    from_env = tmp_path / "env-data"
    env = _env(VMS_DATA_DIR=str(from_env))
    assert run("camera", "add", "7", "--name", "Yard", env=env).returncode == 0
    assert (from_env / "vms.sqlite3").exists()
    assert "Yard" in run("camera", "list", env=env).stdout
    flag = tmp_path / "flag-data"
    assert run("camera", "list", "--data", str(flag), env=env).stdout.strip() == ""
    assert run("camera", "add", "8", "--name", "Roof", "--data", str(flag), env=env).returncode == 0
    assert "Roof" not in run("camera", "list", env=env).stdout


def test_bad_setting_is_a_clean_error(tmp_path: Path) -> None:
    """A bad VMS_* value stops the command with `error: VMS_…` and no stack trace."""
    result = run("user", "list", "--data", str(tmp_path), env=_env(VMS_MAX_RANGE="3 hours"))
    assert_clean_failure(result, "VMS_MAX_RANGE")


def test_newer_database_is_a_clean_error(tmp_path: Path) -> None:
    """A database from a newer version: the command refuses with a message, no stack trace."""
    tmp_path.mkdir(exist_ok=True)
    with sqlite3.connect(tmp_path / "vms.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    result = run("user", "list", "--data", str(tmp_path), timeout=15)
    assert_clean_failure(result, "newer")


@dataclass
class Served:
    """A running `server.py serve` and what it printed so far."""

    process: asyncio.subprocess.Process
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)


async def _drain(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode(errors="replace"))


async def _wait_port(port: int, served: Served, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if served.process.returncode is not None:
                raise AssertionError("serve exited early:\n" + "".join(served.stderr)) from None
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("serve never listened:\n" + "".join(served.stderr)) from None
            await asyncio.sleep(PORT_POLL)
        else:
            writer.close()
            await writer.wait_closed()
            return


@contextlib.asynccontextmanager
async def serving(data: Path, port: int) -> AsyncIterator[Served]:
    """`python server.py serve --data DATA` with VMS_MEDIA_PORT=0 on `port`, until it listens."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SERVER), "serve", "--data", str(data), "--port", str(port),
        cwd=ROOT,
        env=_env(VMS_MEDIA_PORT="0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    served = Served(process)
    served.readers = [
        asyncio.create_task(_drain(process.stdout, served.stdout)),
        asyncio.create_task(_drain(process.stderr, served.stderr)),
    ]
    try:
        await _wait_port(port, served)
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.gather(*served.readers)


async def _stop(served: Served, sig: signal.Signals) -> int:
    served.process.send_signal(sig)
    try:
        return await asyncio.wait_for(served.process.wait(), timeout=20)
    except TimeoutError:
        raise AssertionError("serve did not stop on " + sig.name) from None


async def _login(port: int, login: str, password: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/api/v1/token",
            json={"login": login, "password": password},
            headers={"X-Client": "web", "X-UUID": "cli-test"},
        ) as response,
    ):
        return response.status


async def test_first_serve_prints_the_operator_password_once(
    tmp_path: Path, unused_tcp_port_factory: Callable[[], int]
) -> None:
    """First start prints a working operator password once; SIGTERM exits 0; restarts print none."""
    data = tmp_path / "data"
    port = unused_tcp_port_factory()
    async with serving(data, port) as served:
        output = "".join(served.stdout)
        match = re.search(r"login:\s*(\S+)\s+password:\s*(\S+)", output)
        assert match, output
        login, password = match.groups()
        assert await _login(port, login, password) == 200
        assert await _login(port, login, password + "x") == 422
        assert await _stop(served, signal.SIGTERM) == 0
    stdout, stderr = "".join(served.stdout), "".join(served.stderr)
    assert stdout.count(password) == 1, stdout
    assert password not in stderr, "the password reached the log"
    assert "Traceback" not in stderr
    assert "PRIVATE KEY" not in stdout + stderr

    async with serving(data, port) as again:
        assert await _login(port, login, password) == 200
        code = await _stop(again, signal.SIGINT)
    assert code >= 0, "killed by the signal instead of shutting down"
    assert "password" not in "".join(again.stdout).lower()
    assert "Traceback" not in "".join(again.stderr)
