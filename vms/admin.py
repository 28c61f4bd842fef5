"""Administration commands: users, cameras and signing keys, on the data directory (no service
needed)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from vms.config import Config
from vms.dates import utcnow
from vms.keystore import load_or_create, rotate
from vms.store import Conflict, Database, NotFound, StoreError
from vms.users import create_user


async def with_db(config: Config, work: Callable[[Database], Awaitable[int]]) -> int:
    """Open the database of `config`, run `work` on it and close it; the exit code."""
    try:
        db = await Database.open(config.database_path)
    except (StoreError, sqlite3.Error, OSError) as exc:
        print(f"error: cannot open {config.database_path}: {exc}", file=sys.stderr)
        return 1
    try:
        return await work(db)
    finally:
        await db.close()


async def user_add(db: Database, args: argparse.Namespace) -> int:
    """`user add LOGIN --password PW|- [--name] [--admin] [--camera ID]...`."""
    from_stdin = args.password == "-"  # noqa: S105 - "-" means "read it from stdin"
    secret = sys.stdin.readline().rstrip("\n") if from_stdin else args.password
    if not secret:
        print("error: the password is empty", file=sys.stderr)
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
    return 0


async def user_list(db: Database) -> int:
    """`user list`: one line per user with its role and cameras."""
    for user in await db.users():
        cameras = "all" if user.is_admin else ",".join(map(str, await db.grants(user.id))) or "-"
        role = "operator" if user.is_admin else "user"
        print(f"{user.id}\t{user.login}\t{user.name}\t{role}\tcameras: {cameras}")
    return 0


async def camera_add(db: Database, config: Config, args: argparse.Namespace) -> int:
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
    return 0


async def camera_list(db: Database) -> int:
    """`camera list`: one line per camera."""
    for camera in await db.cameras():
        print(f"{camera.id}\t{camera.name}\t{camera.media_server.url}\t{camera.path}")
    return 0


def signing_keep_seconds(config: Config) -> float:
    """How long a retired signing key must stay published: the longest anything it signed
    can still be in use (an access token, a media token, or a manifest served with its file,
    which lives `archive_ttl` and until the next cleanup run)."""
    return max(
        config.token_ttl, config.media_token_ttl, config.archive_ttl + config.cleanup_interval
    )


def keys_rotate(config: Config) -> int:
    """`keys rotate`: sign with a new key from now on; the old one stays published a while."""
    keys_dir = config.keys_dir
    load_or_create(keys_dir)
    now = time.time()
    kid, retired = rotate(keys_dir, signing_keep_seconds(config), now)
    until = datetime.fromtimestamp(retired.drop_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"New signing key: {kid}")
    print(f"Retired key {retired.jwk['kid']} stays in the JWKS until {until}.")
    print("A running service signs with the new key within a second.")
    return 0


def keys_list(config: Config) -> int:
    """`keys list`: the published keys, the current one first."""
    keystore = load_or_create(config.keys_dir)
    for entry in keystore.jwks()["keys"]:
        if "retired_at" in entry:
            since = datetime.fromtimestamp(entry["retired_at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{entry['kid']}  retired {since}")
        else:
            print(f"{entry['kid']}  signing")
    return 0
