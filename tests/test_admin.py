"""Administration commands against a real data directory, most with a real server running on it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import postgres
from tests.support.processes import ROOT, Service, free_port
from tests.support.service import Footage, rfc3339
from tests.test_cli import _env, assert_clean_failure, run

ALICE_PW = "alice-passphrase"
NEW_PW = "a-new-passphrase"


class Api:
    """A client of the service child process, logged in as one device."""

    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{port}"

    async def login(self, login: str, password: str, device: str = "phone-1") -> int | str:
        """The access token, or the status of a refused login."""
        async with self.http.post(
            f"{self.base}/api/v1/token",
            json={"login": login, "password": password},
            headers={"X-Client": "ios-cctv", "X-UUID": device},
        ) as response:
            if response.status != 200:
                return response.status
            token: str = (await response.json())["access_token"]
            return token

    async def get(self, path: str, token: str, device: str = "phone-1", **params: str) -> Any:
        """GET with the token; (status, JSON body or None)."""
        headers = {"Authorization": f"Bearer {token}", "X-Client": "ios-cctv", "X-UUID": device}
        async with self.http.get(f"{self.base}{path}", headers=headers, params=params) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Service, Api]]:
    """A serving child process with cameras 1 and 2 and user alice (camera 1)."""
    service = Service(tmp_path / "data", free_port())
    for camera in ("1", "2"):
        service.cli("camera", "add", camera, "--name", f"Camera {camera}",
                    "--media-server", "http://127.0.0.1:9")  # fmt: skip
    service.cli("user", "add", "alice", "--password", ALICE_PW, "--camera", "1")
    await service.start()
    async with aiohttp.ClientSession() as http:
        yield service, Api(http, service.port)
    service.kill()


async def acli(service: Service, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """`server.py ARGS` on the service's data directory without blocking the loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "server.py", *args,
        cwd=ROOT, env=service.env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("password", ["", "elevenchars"])
@pytest.mark.parametrize("command", ["add", "passwd"])
def test_passwords_shorter_than_12_are_refused(tmp_path: Path, command: str, password: str) -> None:
    """`user add` and `user passwd` refuse a password under 12 characters, changing nothing."""
    data = str(tmp_path)
    assert run("user", "add", "alice", "--password", ALICE_PW, "--data", data).returncode == 0
    login = "carol" if command == "add" else "alice"
    result = run("user", command, login, "--password", "-", "--data", data, stdin=password + "\n")
    assert_clean_failure(result, "password")
    assert "12 characters" in result.stderr or "empty" in result.stderr
    users = run("user", "list", "--data", data).stdout
    assert "carol" not in users


async def test_passwd_changes_the_password_and_ends_sessions_at_once(
    served: tuple[Service, Api],
) -> None:
    """`user passwd LOGIN --password -`: old password and old tokens stop working immediately."""
    service, api = served
    token = await api.login("alice", ALICE_PW)
    assert isinstance(token, str)
    assert (await api.get("/api/v1/cameras", token))[0] == 200
    code, out, err = await acli(service, "user", "passwd", "alice", "--password", "-",
                                stdin=NEW_PW + "\n")  # fmt: skip
    assert code == 0, err
    assert NEW_PW not in out + err
    assert "1 session(s) ended" in out
    assert await api.login("alice", ALICE_PW) == 422
    assert (await api.get("/api/v1/cameras", token))[0] == 401
    assert isinstance(await api.login("alice", NEW_PW), str)


async def test_remove_ends_the_users_sessions(served: tuple[Service, Api]) -> None:
    """`user remove LOGIN`: the user is gone and their token is refused at once."""
    service, api = served
    token = await api.login("alice", ALICE_PW)
    assert isinstance(token, str)
    code, _out, err = await acli(service, "user", "remove", "alice")
    assert code == 0, err
    assert (await api.get("/api/v1/cameras", token))[0] == 401
    assert await api.login("alice", ALICE_PW) == 422
    assert "alice" not in (await acli(service, "user", "list"))[1]
    code, _out, err = await acli(service, "user", "remove", "alice")
    assert code == 1 and "does not exist" in err and "Traceback" not in err


async def test_grant_and_revoke_change_what_a_user_sees(served: tuple[Service, Api]) -> None:
    """`user grant alice 2` shows camera 2 to her session; `user revoke alice 1 2` hides both."""
    service, api = served
    token = await api.login("alice", ALICE_PW)
    assert isinstance(token, str)

    async def visible() -> list[int]:
        status, body = await api.get("/api/v1/cameras", token)
        assert status == 200
        return [camera["id"] for camera in body["data"]]

    assert await visible() == [1]
    assert (await acli(service, "user", "grant", "alice", "2"))[0] == 0
    assert await visible() == [1, 2]
    code, out, _err = await acli(service, "user", "revoke", "alice", "1", "2")
    assert code == 0 and "cameras: -" in out
    assert await visible() == []
    code, _out, err = await acli(service, "user", "grant", "alice", "9")
    assert code == 1 and "camera 9 does not exist" in err
    code, _out, err = await acli(service, "user", "grant", "nobody", "1")
    assert code == 1 and "does not exist" in err


async def test_camera_remove(served: tuple[Service, Api]) -> None:
    """`camera remove ID` removes it from the list and from its users; an unknown id is an error."""
    service, api = served
    token = await api.login("alice", ALICE_PW)
    assert isinstance(token, str)
    assert (await acli(service, "camera", "remove", "1"))[0] == 0
    listing = (await acli(service, "camera", "list"))[1]
    assert [line.split("\t")[0] for line in listing.strip().splitlines()] == ["2"]
    assert (await api.get("/api/v1/cameras", token))[1]["data"] == []
    code, _out, err = await acli(service, "camera", "remove", "1")
    assert code == 1 and "camera 1 does not exist" in err


async def test_status_tells_archives_queue_disk_media_servers(
    served: tuple[Service, Api],
) -> None:
    """`status` prints archives by status, the queue, disk use, each media server and the pid."""
    service, _api = served
    code, out, err = await acli(service, "status")
    assert code == 0, err
    assert "archives: queued 0, in progress 0, ready 0" in out
    assert "queue: 0 waiting, 0 being fetched" in out
    assert "disk: archives use 0 B in 0 files;" in out
    assert "media server http://127.0.0.1:9: 2 camera(s), down" in out
    assert f"server: running (pid {service.pid})" in out


async def _ready_archive_url(api: Api, token: str, footage: Footage) -> str:
    """Ask for an archive of camera 1 and wait until it is ready; its signed URL."""
    start = footage.start + timedelta(minutes=3)
    status, body = await api.get(
        "/api/v1/cameras/1/archive/link", token,
        **{"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=20))},
    )  # fmt: skip
    assert status == 202, body
    for _ in range(300):
        _status, shown = await api.get(f"/api/v1/downloads/{body['download']['id']}", token)
        if shown["data"]["status"] == "ready":
            url: str = shown["data"]["url"]
            return url
        assert shown["data"]["status"] in ("queued", "in progress"), shown
        await asyncio.sleep(0.1)
    raise AssertionError("the archive never became ready")


def _integrity(database: Path) -> str:
    with sqlite3.connect(database) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.mark.skipif(
    postgres.wanted(),
    reason="SQLite-only: `backup` copies the SQLite file; PostgreSQL is dumped with pg_dump",
)
async def test_backup_under_load_restores_with_keys_and_tokens(
    tmp_path: Path, media_server: str, footage: Footage
) -> None:
    """Backups taken while archives are written and requests served: 0600, intact, and a
    server on the restored copy accepts the tokens and keys issued before."""
    service = Service(tmp_path / "data", free_port())
    service.cli("camera", "add", "1", "--name", "Gate", "--media-server", media_server)
    service.cli("user", "add", "alice", "--password", ALICE_PW, "--camera", "1")
    await service.start()
    backups = [tmp_path / f"backup-{n}.tar.gz" for n in range(3)]
    async with aiohttp.ClientSession() as http:
        api = Api(http, service.port)
        token = await api.login("alice", ALICE_PW)
        assert isinstance(token, str)
        status, jwks = await api.get("/.well-known/jwks.json", token)
        assert status == 200
        signed = await _ready_archive_url(api, token, footage)

        async def load() -> int:
            asked = 0
            for minute in range(12):
                start = footage.start + timedelta(seconds=5 * minute)
                status, _body = await api.get(
                    "/api/v1/cameras/1/archive/link", token,
                    **{"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
                )  # fmt: skip
                assert status in (200, 202, 429), status
                asked += 1
                await api.get("/api/v1/downloads", token)
            return asked

        async def take_backups() -> None:
            for backup in backups:
                code, _out, err = await acli(service, "backup", str(backup))
                assert code == 0, err

        asked, _ = await asyncio.gather(load(), take_backups())
        assert asked == 12
        service.kill()

    for backup in backups:
        assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    restored = tmp_path / "restored"
    # The same box after a rebuild: same address (tokens name it as their issuer).
    again = Service(restored, service.port)
    result = run("restore", str(backups[-1]), "--data", str(restored), env=again.env)
    assert result.returncode == 0, result.stderr
    assert _integrity(restored / "vms.sqlite3") == "ok"
    assert sorted(p.name for p in (restored / "keys").iterdir()) == sorted(
        p.name for p in (tmp_path / "data" / "keys").iterdir()
    )
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (restored / "keys").iterdir())
    await again.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, again.port)
            assert (await api.get("/api/v1/cameras", token))[0] == 200
            assert (await api.get("/.well-known/jwks.json", token))[1] == jwks
            # Archive files are not in a backup: the link is still signed right (not 403),
            # its file is gone (410).
            async with http.get(signed) as response:
                assert response.status == 410, await response.text()
    finally:
        again.kill()


@pytest.mark.parametrize("what", ["a stray file", "a data directory"])
def test_restore_refuses_a_data_directory_in_use(tmp_path: Path, what: str) -> None:
    """A restore into a non-empty data directory is refused and changes nothing there."""
    data = tmp_path / "data"
    assert run("camera", "add", "1", "--name", "Gate", "--data", str(data)).returncode == 0
    backup = tmp_path / "backup.tar.gz"
    assert run("backup", str(backup), "--data", str(data)).returncode == 0
    target = tmp_path / "other"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    if what == "a data directory":
        target = data
    result = run("restore", str(backup), "--data", str(target), env=_env())
    assert_clean_failure(result, "not empty")
    if what == "a stray file":
        assert [p.name for p in target.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("content", [b"", b"not a tar file", None])
def test_restore_of_something_else_leaves_the_directory_empty(
    tmp_path: Path, content: bytes | None
) -> None:
    """A file that is not a backup (empty, garbage, a tar of other files) is refused cleanly."""
    backup = tmp_path / "backup.tar.gz"
    if content is None:
        import tarfile

        (tmp_path / "evil").write_text("x")
        with tarfile.open(backup, "w:gz") as tar:
            tar.add(tmp_path / "evil", arcname="../evil")
    else:
        backup.write_bytes(content)
    target = tmp_path / "target"
    result = run("restore", str(backup), "--data", str(target))
    assert_clean_failure(result, "not a backup of this service")
    assert not target.exists() or [p.name for p in target.iterdir()] in ([], ["server.lock"])


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("user", "passwd"), ("LOGIN", "--password", "--data")),
        (("user", "remove"), ("LOGIN", "--data")),
        (("user", "grant"), ("CAMERA", "--data")),
        (("user", "revoke"), ("CAMERA", "--data")),
        (("camera", "remove"), ("--data",)),
        (("status",), ("--data", "--config")),
        (("backup",), ("FILE", "--data")),
        (("restore",), ("FILE", "--data")),
    ],
)
def test_each_administration_command_has_help(
    args: tuple[str, ...], options: tuple[str, ...]
) -> None:
    """Every administration command's `--help` names its arguments and `--data`."""
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option.lower() in result.stdout.lower(), option
