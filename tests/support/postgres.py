"""A real PostgreSQL server for the tests: one per xdist worker, a fresh database per test.

`VMS_TEST_DATABASE=postgresql` runs the suite on it. The server is Debian's `postgres`, in a
temporary data directory, on 127.0.0.1 at a port from the worker's range, with fsync off
(the tests never survive a power cut). A template database is migrated once; a test gets a
`CREATE DATABASE ... TEMPLATE` copy of it (no migrations to run), emptied after the test for
the next one.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from tests.support.processes import worker_port
from vms.store.pg_schema import PG_MIGRATIONS
from vms.store.postgres import PgDatabase

_T = TypeVar("_T")
ENGINE_VARIABLE = "VMS_TEST_DATABASE"
USER = "vms"
TEMPLATE = "vms_template"
START_TIMEOUT = 30.0
# Every table a test can write to, emptied between tests (DELETE: on a few rows it costs far
# less than TRUNCATE, which makes new files for every table and index), referrers first.
TABLES = (
    "downloads", "camera_grants", "sessions", "cameras", "media_servers", "users",
    "download_totals", "secrets",
)  # fmt: skip
# Tables whose ids the database hands out, started again from 1 as on a new database.
SEQUENCED = ("downloads", "media_servers", "users")
EMPTY_SQL = "; ".join(
    [
        "SET lock_timeout = '10s'",
        *(f"DELETE FROM {table}" for table in TABLES),  # noqa: S608 - constant names
        *(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), 1, false)" for t in SEQUENCED),
        f"UPDATE vms_schema SET version = {len(PG_MIGRATIONS)}",  # noqa: S608 - a number
    ]
)


# Test files that never open the store (the embedded media server, MP4 joining, the push
# protocol's frames): the PostgreSQL pass leaves them out, as they would only run again
# what the SQLite pass just proved, and CI must stay well under 15 minutes.
STORELESS = (
    "mediaserver",
    "archive/test_joiner.py",
    "archive/test_listing.py",
    "push/test_protocol.py",
)
# Read once: the variable leaves the environment when the server starts (forget_choice).
_WANTED = os.environ.get(ENGINE_VARIABLE, "").lower() in ("postgresql", "postgres")


def wanted() -> bool:
    """Whether this run is on PostgreSQL (VMS_TEST_DATABASE=postgresql)."""
    return _WANTED


def forget_choice() -> None:
    """Take VMS_TEST_DATABASE out of the environment: the service warns of unknown VMS_*
    variables, and tests of its command line expect a quiet start."""
    os.environ.pop(ENGINE_VARIABLE, None)


def binaries() -> Path | None:
    """Debian's PostgreSQL bin directory (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parents[1].name
    return int(part) if part.isdigit() else 0


class PostgresServer:
    """`postgres` as a child process on its own data directory and port; stopped by PID."""

    def __init__(self, bin_dir: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.port = port
        # Not under pytest's tmp_path: the server may run as another user (never as root),
        # who must reach the directory.
        self.root = Path(tempfile.mkdtemp(prefix="vms-pg-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as = _server_user()

    def url(self, database: str) -> str:
        """The URL of one database on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Make a cluster and start the server; returns once it accepts connections."""
        data = self.root / "data"
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        log = self.root / "server.log"
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"), "-D", str(data), "-k", str(self.root),
                    "-h", "127.0.0.1", "-p", str(self.port),
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=300",
                    "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning",
                ],
                stdout=out, stderr=subprocess.STDOUT, **self._as_user(),
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start in {START_TIMEOUT} s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Stop the server by its PID (fast shutdown) and remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, *command: str) -> None:
        result = subprocess.run(command, capture_output=True, check=False, **self._as_user())
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr.decode(errors='replace')}")

    def _as_user(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid}


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: PostgreSQL refuses root, so root hands it to `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and there is no postgres user") from None


class Databases:
    """Fresh databases on one server, each a copy of a template migrated once.

    Runs its own event loop in a thread, so sync fixtures can use it whatever loop a test has.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._names = count(1)
        self._free: list[str] = []
        self._keepers: dict[str, Any] = {}
        self._admin: Any = self._call(asyncpg.connect(server.url("postgres")))
        self._call(self._admin.execute(f"CREATE DATABASE {TEMPLATE}"))
        self._call(self._migrate(server.url(TEMPLATE)))

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    @staticmethod
    async def _migrate(url: str) -> None:
        db = await PgDatabase.open(url)
        await db.close()

    @contextmanager
    def fresh(self, *, migrated: bool = True) -> Iterator[str]:
        """A database for one test, migrated and empty (or with no schema at all); its URL.

        A migrated one is emptied afterwards and handed to the next test, which costs far less
        than another CREATE DATABASE.
        """
        if not migrated:
            name = self._create("template0")
            try:
                yield self.server.url(name)
            finally:
                self._call(self._admin.execute(f"DROP DATABASE {name} WITH (FORCE)"))
            return
        name = self._free.pop() if self._free else self._create(TEMPLATE)
        try:
            yield self.server.url(name)
        finally:
            try:
                lingering = self._call(self._empty(name))
            except (OSError, asyncpg.PostgresError) as exc:  # left in a state only a drop fixes
                print(f"dropping test database {name}: {exc}")
                self._drop(name)
            else:
                if lingering:
                    # Something the test started still uses it (a pool reconnects after being
                    # cut): were it reused, that would work the next test's jobs. Dropped, it
                    # cannot come back.
                    self._drop(name)
                else:
                    self._free.append(name)

    def _drop(self, name: str) -> None:
        self._call(self._admin.execute(f"DROP DATABASE {name} WITH (FORCE)"))
        self._keepers.pop(name, None)

    def _create(self, template: str) -> str:
        name = f"vms_test_{next(self._names)}"
        self._call(self._admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}"))
        return name

    async def _empty(self, name: str) -> int:
        """Cut every other connection to `name` (a service a test left running, say), then
        empty its tables and restore its schema version; how many connections were cut."""
        keeper = self._keepers.get(name)
        if keeper is None or keeper.is_closed():
            keeper = self._keepers[name] = await asyncpg.connect(self.server.url(name))
        cut = await keeper.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await keeper.execute(EMPTY_SQL)
        return len(cut)

    def close(self) -> None:
        """Close the admin connection and stop the loop's thread."""
        for keeper in self._keepers.values():
            self._call(keeper.close())
        self._call(self._admin.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@contextmanager
def running() -> Iterator[Databases]:
    """A server for this worker, stopped at the end; raises LookupError if not installed."""
    bin_dir = binaries()
    if bin_dir is None:
        raise LookupError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres)")
    server = PostgresServer(bin_dir, worker_port())
    try:
        server.start()
        databases = Databases(server)
        try:
            yield databases
        finally:
            databases.close()
    finally:
        server.stop()
