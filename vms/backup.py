"""`backup FILE` and `restore FILE`: the database and the keys in one tar file, mode 0600.

The database is copied with SQLite's online backup API, which reads one consistent snapshot
while the service goes on writing (WAL), so a backup needs no stop. The keys go with it:
without them every token, signed link and channel signature issued before would be void.
Archives and recordings are not included; they are media, not state.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vms.config import Config
from vms.preflight import LOCK_FILE, StartupError, lock_data_dir
from vms.store import MIGRATIONS

DATABASE_MEMBER = "vms.sqlite3"
KEYS_MEMBER = "keys"
# A restore refuses a backup holding anything bigger than this (the database included).
MAX_MEMBER = 1 << 36


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why, for one line on stderr."""


@dataclass(frozen=True)
class Summary:
    """What a backup holds."""

    database_bytes: int
    keys: int


def _snapshot(database: Path, into: Path) -> None:
    """Copy `database` to `into` with the online backup API, in one step (one snapshot)."""
    source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True)
    try:
        target = sqlite3.connect(into)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()


def _refuse_postgres(config: Config) -> None:
    """A backup holds the SQLite file; a PostgreSQL database is the operator's to dump."""
    if config.database_url:
        raise BackupError(
            "the database is PostgreSQL (VMS_DATABASE_URL): back it up with pg_dump;"
            " `backup` and `restore` handle the SQLite file in DATA"
        )


def backup(config: Config, file: Path) -> Summary:
    """Write the database and keys of `config` to `file` (0600), replacing it atomically."""
    _refuse_postgres(config)
    if not config.database_path.is_file():
        raise BackupError(f"no database at {config.database_path}")
    keys = (
        sorted(p for p in config.keys_dir.glob("*") if p.is_file())
        if config.keys_dir.is_dir()
        else []
    )
    file = file.absolute()
    with tempfile.TemporaryDirectory(prefix="vms-backup-") as scratch:
        copy = Path(scratch) / DATABASE_MEMBER
        try:
            _snapshot(config.database_path, copy)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read {config.database_path}: {exc}") from None
        partial = file.with_name(f".{file.name}.partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                tar.add(copy, arcname=DATABASE_MEMBER, recursive=False, filter=_private)
                for key in keys:
                    tar.add(key, arcname=f"{KEYS_MEMBER}/{key.name}", filter=_private)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, file)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise BackupError(f"cannot write {file}: {exc.strerror}") from None
        return Summary(copy.stat().st_size, len(keys))


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    return info


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The backup's members, if every one is a plain file this program would have written."""
    members = tar.getmembers()
    names = set()
    for member in members:
        parts = member.name.split("/")
        is_key = len(parts) == 2 and parts[0] == KEYS_MEMBER and parts[1] not in ("", ".", "..")
        if not member.isfile() or not (member.name == DATABASE_MEMBER or is_key):
            raise BackupError(f"not a backup of this service: unexpected member {member.name!r}")
        if member.size > MAX_MEMBER or member.name in names:
            raise BackupError(f"not a backup of this service: bad member {member.name!r}")
        names.add(member.name)
    if DATABASE_MEMBER not in names:
        raise BackupError(f"not a backup of this service: no {DATABASE_MEMBER}")
    return members


def _check_database(path: Path) -> None:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    if result is None or result[0] != "ok":
        raise BackupError(f"the backup's database is damaged: {result[0] if result else '?'}")
    if version > len(MIGRATIONS):
        raise BackupError(f"the backup's database is newer (schema {version}) than this program")


def restore(config: Config, file: Path) -> Summary:
    """Unpack `file` into the stopped, empty data directory of `config`."""
    _refuse_postgres(config)
    data = config.data_dir
    if data.exists() and not data.is_dir():
        raise BackupError(f"{data} is not a directory")
    if data.is_dir() and any(p.name != LOCK_FILE for p in data.iterdir()):
        raise BackupError(f"{data} is not empty; restore needs a stopped, empty data directory")
    try:
        lock = lock_data_dir(data)
    except StartupError as exc:
        raise BackupError(str(exc)) from None
    try:
        return _unpack(file, data)
    except BaseException:
        # Back to empty, so the restore can simply be tried again.
        for child in data.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            elif child.name != LOCK_FILE:
                child.unlink()
        raise
    finally:
        os.close(lock)


def _unpack(file: Path, data: Path) -> Summary:
    try:
        tar = tarfile.open(file, mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except (OSError, tarfile.TarError) as exc:
        reason = getattr(exc, "strerror", None) or "not a backup of this service"
        raise BackupError(f"cannot read {file}: {reason}") from None
    keys = 0
    with tar:
        try:
            members = _members(tar)
            os.chmod(data, 0o700)
            for member in members:
                target = data / member.name
                if member.name.startswith(f"{KEYS_MEMBER}/"):
                    target.parent.mkdir(mode=0o700, exist_ok=True)
                    keys += 1
                source = tar.extractfile(member)
                assert source is not None  # a regular file, checked above
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with source, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
        except (OSError, tarfile.TarError, EOFError, io.UnsupportedOperation) as exc:
            raise BackupError(f"cannot restore {file}: {exc}") from None
    database = data / DATABASE_MEMBER
    try:
        _check_database(database)
    except sqlite3.Error as exc:
        raise BackupError(f"the backup's database cannot be read: {exc}") from None
    return Summary(database.stat().st_size, keys)
