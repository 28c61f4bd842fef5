"""Command line: serve the service, run a standalone media server, manage users and cameras."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from vms import admin
from vms.audit import audit
from vms.bootstrap import OPERATOR_LOGIN, ensure_operator, forget_operator
from vms.config import Config, ConfigError, load_config, unknown_environment
from vms.dates import utcnow
from vms.logs import AccessLogger, setup_logging
from vms.preflight import StartupError
from vms.store import StoreError, store_name
from vms.tls import Tls
from vms.tls import load as load_tls
from vms.verify import verify

log = logging.getLogger(__name__)


def _common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Sub-commands repeat the options; SUPPRESS keeps them from erasing a value given earlier.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--data", metavar="DIR", default=default, help="state directory (env VMS_DATA_DIR)"
    )
    parser.add_argument(
        "--config", metavar="FILE", type=Path, default=default, help="TOML settings file"
    )


def build_parser() -> argparse.ArgumentParser:
    """Every command and option, as `--help` lists them."""
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="VMS archive service. With no command, `serve` runs on the embedded defaults.",
    )
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API, push and embedded media server")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (env VMS_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="API port (env VMS_PORT, default 8080)")
    serve.add_argument(
        "--media-port", type=int, help="embedded media server port, 0 turns it off (default 9996)"
    )

    user = commands.add_parser("user", help="manage users")
    _common(user)
    user_commands = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    user_add = user_commands.add_parser("add", help="create a user")
    _common(user_add)
    user_add.add_argument("login")
    user_add.add_argument("--password", required=True, help="the password, or - to read stdin")
    user_add.add_argument("--name", help="display name (default: the login)")
    user_add.add_argument("--admin", action="store_true", help="operator: sees every camera")
    user_add.add_argument(
        "--camera", type=int, action="append", default=[], metavar="ID", help="grant a camera"
    )
    user_list = user_commands.add_parser("list", help="list users and their cameras")
    _common(user_list)

    camera = commands.add_parser("camera", help="manage cameras")
    _common(camera)
    camera_commands = camera.add_subparsers(dest="action", metavar="ACTION", required=True)
    camera_add = camera_commands.add_parser("add", help="create or update a camera")
    _common(camera_add)
    camera_add.add_argument("id", type=int)
    camera_add.add_argument("--name", required=True)
    camera_add.add_argument(
        "--media-server", metavar="URL", help="MediaMTX playback address (default: embedded)"
    )
    camera_add.add_argument("--path", help="the media server's path (default: cameraID)")
    camera_list = camera_commands.add_parser("list", help="list cameras")
    _common(camera_list)

    _add_admin_commands(commands, user_commands, camera_commands)
    keys = commands.add_parser("keys", help="the signing keys of tokens and manifests")
    _common(keys)
    key_commands = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    rotate = key_commands.add_parser(
        "rotate", help="sign with a new key; the old one stays in the JWKS until unused"
    )
    _common(rotate)
    key_list = key_commands.add_parser("list", help="the published keys")
    _common(key_list)

    check = commands.add_parser(
        "verify", help="check an archive file against its signed manifest (offline)"
    )
    _common(check)
    check.add_argument(
        "file", metavar="FILE", help="the archive (.mp4), or its object s3://BUCKET/KEY"
    )
    check.add_argument("manifest", type=Path, metavar="MANIFEST", help="its manifest (JWS)")
    check.add_argument(
        "--jwks",
        metavar="FILE|URL",
        help="the VMS's saved /.well-known/jwks.json, or its URL (default: this VMS's URL)",
    )

    media = commands.add_parser("media-server", help="run only the media server, for another box")
    _common(media)
    media.add_argument("--recordings", type=Path, required=True, metavar="DIR")
    media.add_argument("--host", default="127.0.0.1")
    media.add_argument("--port", type=int, default=9996)
    media.add_argument(
        "--jwks", metavar="URL", help="the VMS's JWKS URL (default http://127.0.0.1:8080/...)"
    )
    return parser


def _add_admin_commands(commands: Any, user_commands: Any, camera_commands: Any) -> None:
    """Administration beyond add and list: passwords, removal, grants, status, backups."""
    passwd = user_commands.add_parser("passwd", help="set a user's password (ends their sessions)")
    _common(passwd)
    passwd.add_argument("login")
    passwd.add_argument("--password", required=True, help="the password, or - to read stdin")
    remove = user_commands.add_parser("remove", help="remove a user and end their sessions")
    _common(remove)
    remove.add_argument("login")
    for action, verb in (("grant", "let a user see cameras"), ("revoke", "take cameras away")):
        change = user_commands.add_parser(action, help=verb)
        _common(change)
        change.add_argument("login")
        change.add_argument("cameras", type=int, nargs="+", metavar="CAMERA")
    camera_remove = camera_commands.add_parser(
        "remove", help="remove a camera with its grants and history"
    )
    _common(camera_remove)
    camera_remove.add_argument("id", type=int)
    status = commands.add_parser(
        "status", help="archives by status, the queue, disk use, media servers"
    )
    _common(status)
    backup = commands.add_parser(
        "backup", help="copy the database and keys to FILE (0600), also while serving"
    )
    _common(backup)
    backup.add_argument("file", type=Path, metavar="FILE")
    restore = commands.add_parser(
        "restore", help="unpack a backup into a stopped, empty data directory"
    )
    _common(restore)
    restore.add_argument("file", type=Path, metavar="FILE")


def _run_admin(config: Config, args: argparse.Namespace) -> int | None:
    """Run an administration command of `_add_admin_commands`; None if it is another one."""
    from vms import backup

    command = (args.command, getattr(args, "action", None))
    db_commands = {
        ("user", "passwd"): admin.user_passwd,
        ("user", "remove"): admin.user_remove,
        ("user", "grant"): admin.user_grant,
        ("user", "revoke"): admin.user_revoke,
        ("camera", "remove"): admin.camera_remove,
    }
    if command in db_commands:
        work = db_commands[command]
        return asyncio.run(admin.with_db(config, lambda db: work(db, config, args)))
    if args.command == "status":
        return asyncio.run(admin.with_db(config, lambda db: admin.status(db, config)))
    if args.command not in ("backup", "restore"):
        return None
    try:
        if args.command == "backup":
            summary = backup.backup(config, args.file)
        else:
            summary = backup.restore(config, args.file)
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    done = "written to" if args.command == "backup" else "restored from"
    print(
        f"{args.command}: database ({summary.database_bytes} bytes) and {summary.keys} key "
        f"file(s) {done} {args.file}"
    )
    audit(f"admin.{args.command}", file=str(args.file), data=str(config.data_dir))
    return 0


def config_from(args: argparse.Namespace) -> Config:
    """Settings for this invocation: TOML, then environment, then flags."""
    overrides: dict[str, Any] = {"data_dir": args.data}
    for name in ("host", "port", "media_port"):
        if args.command == "serve":
            overrides[name] = getattr(args, name, None)
    return load_config(args.config, overrides=overrides)


def _serve(config: Config) -> int:
    from vms import appkeys, urls
    from vms.app import create_app
    from vms.listen import serve
    from vms.preflight import claim

    async def first_start(app: web.Application) -> None:
        """Tell the operator how to log in the first time, once, on the console (not the log)."""
        db = app[appkeys.DB]
        password = await ensure_operator(db, utcnow())
        try:
            held.listen()  # both ports accept before the password is shown
        except StartupError:
            if password:  # nobody saw it: the next start makes the account again
                await forget_operator(db)
            raise
        if password:
            links = app[appkeys.URLS]
            page, api = links.absolute(urls.LOGIN), links.absolute(urls.LOGIN_API)
            print(
                "\nFirst start: created the operator account.\n"
                f"  login:    {OPERATOR_LOGIN}\n  password: {password}\n"
                f"  Log in at {page} or POST {api}\n"
                "This password is shown only now.\n",
                flush=True,
            )

    try:
        held = claim(config)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            tls = _tls(config)
        except StartupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        app = create_app(config, on_start=first_start, tls=tls)
        app[appkeys.MEDIA_SOCKETS] = held.media
        serve(
            app, config, held.api, ssl_context=tls.server if tls else None,
            access_log_class=AccessLogger, shutdown_timeout=10.0,
        )  # fmt: skip
    except (StoreError, sqlite3.Error) as exc:
        # Raised while opening the database, before anything is served.
        print(f"error: cannot open {store_name(config)}: {exc}", file=sys.stderr)
        return 1
    except StartupError as exc:  # a port lost between bind and listen
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        held.release()
    return 0


def _tls(config: Config) -> Tls | None:
    """The certificate to serve with, its fingerprint printed (on the console, not the log)."""
    tls = load_tls(config, utcnow())
    if tls is not None:
        made = "generated a self-signed certificate" if tls.generated else "certificate"
        print(
            f"TLS: {made} {tls.cert_file}\n  SHA-256 fingerprint: {tls.fingerprint}",
            flush=True,
        )
    return tls


def _media_server(config: Config, args: argparse.Namespace) -> int:
    from vms.listen import Limits
    from vms.mediaserver.standalone import serve

    jwks = args.jwks or f"{config.base_url}/.well-known/jwks.json"
    asyncio.run(serve(args.recordings, args.host, args.port, jwks, Limits.of(config, ports=1)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(log_format=config.log_format)
    for name in unknown_environment(os.environ):
        log.warning("%s is not a setting and is ignored (the README lists them)", name)
    if args.command in (None, "serve"):
        return _serve(config)
    if args.command == "media-server":
        return _media_server(config, args)
    done = _run_admin(config, args)
    if done is not None:
        return done
    if args.command == "keys":
        return admin.keys_rotate(config) if args.action == "rotate" else admin.keys_list(config)
    if args.command == "verify":
        jwks = args.jwks or f"{config.base_url}/.well-known/jwks.json"
        file = args.file if args.file.startswith("s3://") else Path(args.file)
        return verify(file, args.manifest, jwks, sys.stdout, sys.stderr, config.s3_endpoint)
    if args.command == "user":
        if args.action == "add":
            return asyncio.run(admin.with_db(config, lambda db: admin.user_add(db, args)))
        return asyncio.run(admin.with_db(config, admin.user_list))
    if args.action == "add":
        return asyncio.run(admin.with_db(config, lambda db: admin.camera_add(db, config, args)))
    return asyncio.run(admin.with_db(config, admin.camera_list))
