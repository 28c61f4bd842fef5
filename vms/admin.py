"""Administration commands: users, cameras and signing keys, on the data directory (no service
needed)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiohttp

from vms.archive.fetcher import free_bytes
from vms.audit import audit
from vms.config import Config
from vms.dates import utcnow
from vms.keystore import (
    Keystore,
    RetiredKey,
    load_or_create,
    load_or_create_stored,
    rotate,
    rotate_stored,
)
from vms.models import Status, User
from vms.preflight import holder
from vms.store import Conflict, NotFound, Store, StoreError, open_store, store_name
from vms.threads import run_blocking
from vms.users import create_user, password_problem, set_password

_T = TypeVar("_T")


async def with_db(config: Config, work: Callable[[Store], Awaitable[int]]) -> int:
    """Open the database of `config`, run `work` on it and close it; the exit code."""
    try:
        db = await open_store(config)
    except (StoreError, sqlite3.Error, OSError) as exc:
        print(f"error: cannot open {store_name(config)}: {exc}", file=sys.stderr)
        return 1
    try:
        return await work(db)
    finally:
        await db.close()


def _password(args: argparse.Namespace) -> str | None:
    """The password of `--password PW|-` (`-` reads a line of stdin), or None if refused."""
    from_stdin = args.password == "-"  # noqa: S105 - "-" means "read it from stdin"
    secret: str = sys.stdin.readline().rstrip("\r\n") if from_stdin else args.password
    problem = password_problem(secret)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    return secret


async def user_add(db: Store, args: argparse.Namespace) -> int:
    """`user add LOGIN --password PW|- [--name] [--admin] [--camera ID]...`."""
    secret = _password(args)
    if secret is None:
        return 2
    for camera_id in args.camera:
        if await db.camera(camera_id) is None:
            print(f"error: camera {camera_id} does not exist", file=sys.stderr)
            return 2
    try:
        user = await create_user(
            db, args.login, secret, name=args.name, is_admin=args.admin, now=utcnow()
        )
    except Conflict:
        print(f"error: user {args.login!r} already exists", file=sys.stderr)
        return 1
    for camera_id in args.camera:
        await db.grant(user.id, camera_id)
    print(f"user {user.id} {user.login!r} created")
    audit("admin.user_add", login=user.login, operator=user.is_admin,
          cameras=",".join(map(str, args.camera)) or None)  # fmt: skip
    return 0


async def user_list(db: Store) -> int:
    """`user list`: one line per user with its role and cameras."""
    for user in await db.users():
        cameras = "all" if user.is_admin else ",".join(map(str, await db.grants(user.id))) or "-"
        role = "operator" if user.is_admin else "user"
        print(f"{user.id}\t{user.login}\t{user.name}\t{role}\tcameras: {cameras}")
    return 0


async def camera_add(db: Store, config: Config, args: argparse.Namespace) -> int:
    """`camera add ID --name NAME [--media-server URL] [--path PATH]`: create or update."""
    url = (args.media_server or config.media_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        print("error: --media-server must be an http(s) URL", file=sys.stderr)
        return 2
    try:
        camera = await db.put_camera(
            args.id, args.name, args.path or f"camera{args.id}", url, utcnow()
        )
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"camera {camera.id} {camera.name!r} at {camera.media_server.url} path {camera.path}")
    audit("admin.camera_add", camera=camera.id, media_server=camera.media_server.url)
    return 0


async def camera_list(db: Store) -> int:
    """`camera list`: one line per camera."""
    for camera in await db.cameras():
        print(f"{camera.id}\t{camera.name}\t{camera.media_server.url}\t{camera.path}")
    return 0


# Changing what exists: each takes effect in a running server at once (it is told by SIGHUP).


async def _user(db: Store, login: str) -> User | None:
    found = await db.user_with_hash(login)
    if found is None:
        print(f"error: user {login!r} does not exist", file=sys.stderr)
        return None
    return found[0]


def _tell_server(config: Config) -> None:
    """Make a server running on this data directory drop what it remembers of sessions."""
    pid = holder(config.data_dir)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"warning: cannot tell the running server (pid {pid}): {exc.strerror}",
              file=sys.stderr)  # fmt: skip


async def user_passwd(db: Store, config: Config, args: argparse.Namespace) -> int:
    """`user passwd LOGIN --password PW|-`: a new password; the user's sessions end."""
    user = await _user(db, args.login)
    if user is None:
        return 1
    secret = _password(args)
    if secret is None:
        return 2
    now = utcnow()
    await set_password(db, user, secret, now)
    ended = await db.end_user_sessions(user.id, now)
    _tell_server(config)
    print(f"password of {user.login!r} changed; {len(ended)} session(s) ended")
    audit("admin.user_passwd", login=user.login, sessions_ended=len(ended))
    return 0


async def user_remove(db: Store, config: Config, args: argparse.Namespace) -> int:
    """`user remove LOGIN`: the user, their grants and history go; their sessions end."""
    user = await _user(db, args.login)
    if user is None:
        return 1
    ended = await db.end_user_sessions(user.id, utcnow())
    await db.delete_user(user.id)
    _tell_server(config)
    print(f"user {user.id} {user.login!r} removed; {len(ended)} session(s) ended")
    audit("admin.user_remove", login=user.login, sessions_ended=len(ended))
    return 0


async def _cameras_exist(db: Store, camera_ids: list[int]) -> bool:
    for camera_id in camera_ids:
        if await db.camera(camera_id) is None:
            print(f"error: camera {camera_id} does not exist", file=sys.stderr)
            return False
    return True


async def _change_grants(
    db: Store, config: Config, args: argparse.Namespace, *, grant: bool
) -> int:
    user = await _user(db, args.login)
    if user is None:
        return 1
    if not await _cameras_exist(db, args.cameras):
        return 1
    for camera_id in args.cameras:
        await (db.grant if grant else db.revoke)(user.id, camera_id)
    _tell_server(config)
    cameras = ",".join(map(str, await db.grants(user.id))) or "-"
    print(f"user {user.login!r} cameras: {cameras}")
    event = "admin.user_grant" if grant else "admin.user_revoke"
    audit(event, login=user.login, cameras=",".join(map(str, args.cameras)))
    return 0


async def user_grant(db: Store, config: Config, args: argparse.Namespace) -> int:
    """`user grant LOGIN CAMERA...`: the user may see these cameras too."""
    return await _change_grants(db, config, args, grant=True)


async def user_revoke(db: Store, config: Config, args: argparse.Namespace) -> int:
    """`user revoke LOGIN CAMERA...`: the user no longer sees these cameras."""
    return await _change_grants(db, config, args, grant=False)


async def camera_remove(db: Store, config: Config, args: argparse.Namespace) -> int:
    """`camera remove ID`: the camera, its grants and its history go (files are cleaned up)."""
    if not await db.delete_camera(args.id):
        print(f"error: camera {args.id} does not exist", file=sys.stderr)
        return 1
    _tell_server(config)
    print(f"camera {args.id} removed")
    audit("admin.camera_remove", camera=args.id)
    return 0


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _archive_usage(archives: Path) -> tuple[int, int, int]:
    """Bytes and files under `archives`, and the bytes free on its file system."""
    archives.mkdir(parents=True, exist_ok=True)
    used = files = 0
    with os.scandir(archives) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                used += entry.stat(follow_symlinks=False).st_size
                files += 1
    return used, files, free_bytes(archives)


async def _reachable(http: aiohttp.ClientSession, url: str) -> str:
    """`up` if the media server answers HTTP at all, else `down` and why."""
    try:
        async with http.get(f"{url}/list", ssl=False) as response:
            return f"up (HTTP {response.status})"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"down ({type(exc).__name__})"


async def status(db: Store, config: Config) -> int:
    """`status`: archives by status, the queue, disk use, media servers, the server."""
    counts = await db.archive_counts()
    print("archives: " + ", ".join(f"{state.value} {counts.get(state, 0)}" for state in Status))
    print(
        f"queue: {counts.get(Status.QUEUED, 0)} waiting, "
        f"{counts.get(Status.RUNNING, 0)} being fetched "
        f"(at most {config.download_concurrency} at once)"
    )
    used, files, free = await run_blocking(None, _archive_usage, config.archives_dir)
    print(
        f"disk: archives use {_size(used)} in {files} files; {_size(free)} free under "
        f"{config.archives_dir} (new archives refused below {_size(config.min_free_disk)})"
    )
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for server, cameras in await db.media_servers():
            state = await _reachable(http, server.url)
            print(f"media server {server.url}: {cameras} camera(s), {state}")
    pid = holder(config.data_dir)
    print(f"server: running (pid {pid})" if pid else "server: not running")
    return 0


def signing_keep_seconds(config: Config) -> float:
    """How long a retired signing key must stay published: the longest anything it signed
    can still be in use (an access token, a media token, or a manifest served with its file,
    which lives `archive_ttl` and until the next cleanup run)."""
    return max(
        config.token_ttl, config.media_token_ttl, config.archive_ttl + config.cleanup_interval
    )


def keys_rotate(config: Config) -> int:
    """`keys rotate`: sign with a new key from now on; the old one stays published a while.

    With a database URL the keys are the ones kept in the database, for every process.
    """
    keep, now = signing_keep_seconds(config), time.time()
    if config.database_url:

        async def rotate_in(store: Store) -> tuple[str, RetiredKey]:
            await load_or_create_stored(store, config.keys_dir)
            return await rotate_stored(store, keep, now)

        rotated = asyncio.run(_on_store(config, rotate_in))
        if rotated is None:
            return 1
        kid, retired = rotated
    else:
        load_or_create(config.keys_dir)
        kid, retired = rotate(config.keys_dir, keep, now)
    until = datetime.fromtimestamp(retired.drop_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"New signing key: {kid}")
    print(f"Retired key {retired.jwk['kid']} stays in the JWKS until {until}.")
    print("A running service signs with the new key within a second.")
    return 0


def keys_list(config: Config) -> int:
    """`keys list`: the published keys, the current one first."""
    keystore: Keystore | None
    if config.database_url:
        keystore = asyncio.run(
            _on_store(config, lambda store: load_or_create_stored(store, config.keys_dir))
        )
        if keystore is None:
            return 1
    else:
        keystore = load_or_create(config.keys_dir)
    for entry in keystore.jwks()["keys"]:
        if "retired_at" in entry:
            since = datetime.fromtimestamp(entry["retired_at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{entry['kid']}  retired {since}")
        else:
            print(f"{entry['kid']}  signing")
    return 0


async def _on_store(config: Config, work: Callable[[Store], Awaitable[_T]]) -> _T | None:
    """Run `work` on the configured store; None (said on stderr) if it cannot be opened."""
    try:
        store = await open_store(config)
    except (StoreError, OSError) as exc:  # the URL (it may hold a password) is not shown
        print(f"error: cannot open the database: {exc}", file=sys.stderr)
        return None
    try:
        return await work(store)
    finally:
        await store.close()
