"""Field-size data (issue 9): what a year of history costs, new code beside a baseline, one run.

Usage:
    python bench/growth.py history [--sizes 10000 100000 1000000] [--requests 15] [--port-base N]
                                   [--only-sweep]
    python bench/growth.py history --lookup-only [--against REV] [--repeat 3] [--sizes ...]
    python bench/growth.py recordings [--sizes 60 10080 43200] [--repeat 5]   (growth_recordings.py)

`history` builds, for each size, a real DATA directory: the service's SQLite file with that
many download rows over 1,000 users (bulk insert in one transaction), half of them archives
of one heavy user, spread over a year. The baseline is the same rows in a second file with
the schema before the field-size migration, read by the queries the service made then (kept
below, verbatim). For each size it prints, as medians:

- operator `/history` page 1, last page, and the `/history/status` poll: baseline SQL, new
  store call, new HTTP request to the real service (`python server.py serve`);
- the heavy user's API `/downloads?kind=archive` last page, the same three ways;
- `GET /api/v1/downloads/{id}` p50 idle and while two clients load `/history` back to back
  (baseline: the old queries on one shared connection; new: the store, then over HTTP);
- the phone archive request (`/cameras/1/archive/link`, ios-cctv) of the heavy user, who
  has half the rows as archives: one at a time, and the last of five at once;
- at the largest size, the cleanup sweep of min(100k, size/10) due archives with the
  event loop's worst lag and the garbage collector's passes during it (baseline: the old
  due query and batches; previous: the schema before the last sweep migration, with that
  version's due query and batches kept below verbatim). With `--only-sweep`, only this is
  built and measured.
Servers listen on 127.0.0.1:55500-55999 only (`--port-base` moves the range).

`history --lookup-only [--against REV]` builds the rows only for the new schema and measures
just the lookup while `/history` loads, on this checkout and (alternately, `--repeat` times)
on the files of git revision REV.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
from cleanup import Ticker
from common import BENCH_PASSWORD, ROOT, Service, bench_service, free_port, small_footage

sys.path.insert(0, str(ROOT))

from vms.archive.cleanup import _delete, purge_expired
from vms.archive.files import ArchiveFiles, file_name, poster_name
from vms.dates import format_stamp
from vms.models import Kind, Status
from vms.store import MIGRATIONS, Database
from vms.store.rows import ADD_TOTALS, DOWNLOAD_COLUMNS, DOWNLOAD_FROM, moved
from vms.urls import Urls

USERS = 1000
CAMERAS = 10
PER_PAGE = 25
PORTS = 55500  # the first port this benchmark may use
HEAVY = "heavy"
YEAR = timedelta(days=365)
_CSRF = re.compile(r'name="_csrf" value="([0-9a-f]{64})"')
# The migration that brought the field-size indexes and totals; the baseline stops before it.
FIELD_SIZE = next(i for i, script in enumerate(MIGRATIONS) if "download_totals" in script)
# The migration that took swept archives out of the status indexes; "previous" stops before it.
SWEEP = next(
    i for i, s in enumerate(MIGRATIONS) if "status <> 'ready' AND status <> 'expired'" in s
)


# The queries the service made before the field-size work, kept verbatim as the baseline.
def old_list_sql(clause: str) -> str:
    """The old list_downloads page: a window count over every match, then OFFSET."""
    return (
        f"SELECT {DOWNLOAD_COLUMNS}, count(*) OVER () {DOWNLOAD_FROM} WHERE {clause}"
        " ORDER BY d.created_at DESC, d.id DESC LIMIT ? OFFSET ?"
    )


OLD_COUNT_PENDING = (
    "SELECT count(*) FROM downloads WHERE kind = 'archive' AND user_id = ? AND device = ?"
    " AND status IN (?, ?)"
)
OLD_PENDING_ARCHIVE = (
    f"SELECT {DOWNLOAD_COLUMNS} {DOWNLOAD_FROM}"
    " WHERE d.kind = 'archive' AND d.session_id = ? AND d.camera_id = ?"
    " AND d.range_from = ? AND d.range_to = ? AND d.status IN (?, ?, ?)"
    " ORDER BY d.id DESC LIMIT 1"
)
OLD_DUE = "SELECT id FROM downloads WHERE kind = 'archive' AND status = ? AND expires_at <= ?"
OLD_BY_ID = f"SELECT {DOWNLOAD_COLUMNS} {DOWNLOAD_FROM} WHERE d.id = ?"


# The sweep before the last sweep migration, kept verbatim: every due id as a row tuple, and
# each batch's rows read back one by one to move the totals.
PREVIOUS_DUE = (
    "SELECT id FROM downloads INDEXED BY downloads_ready_expiry"
    " WHERE kind = 'archive' AND status = 'ready' AND expires_at <= ?"
)


def previous_expire_where(count: int) -> str:
    """The previous batch's condition: by primary key, rows already expired left alone."""
    marks = ", ".join("?" * count)
    return f"WHERE id IN ({marks}) AND +kind = 'archive' AND +status <> 'expired'"


def old_mark_expired_sql(count: int) -> str:
    """The old batch update: `kind = 'archive'` let it walk the kind index for every batch."""
    marks = ", ".join("?" * count)
    return f"UPDATE downloads SET status = ?, progress = 0, updated_at = ? WHERE kind = 'archive' AND id IN ({marks})"  # noqa: E501, S608


# Building the data


def _rows(size: int, heavy: int, start: datetime) -> Iterator[tuple[Any, ...]]:
    """Download rows: even ones the heavy user's archives, odd ones the others' history."""
    step = YEAR / size
    for index in range(size):
        created = format_stamp(start + step * index)
        moment = (start + step * index).timestamp()
        if index % 2 == 0:
            user, kind, camera = heavy, Kind.ARCHIVE, 1
            status = Status.FAILED if index % 20 == 0 else Status.EXPIRED
        else:
            user = 1000 + index % (USERS - 1)
            camera = 1 + index % CAMERAS
            kind = Kind.ARCHIVE if index % 7 == 0 else Kind.LINK
            status = Status.EXPIRED if kind == Kind.ARCHIVE else Status.READY
        yield (
            kind, user, f"bench-{user}", camera, f"dev-{user}", "ios-cctv", moment - 600,
            moment - 300, status, created, created, moment if kind == Kind.ARCHIVE else None,
        )  # fmt: skip


def build(path: Path, baseline: Path | None, size: int) -> tuple[int, float]:
    """Bulk-fill the service's file and a baseline copy with the old schema; (heavy id, s)."""
    started = time.perf_counter()
    with sqlite3.connect(path) as conn:
        # A big page cache: fourteen indexes of a million rows are inserted out of order.
        conn.execute("PRAGMA cache_size = -1000000")
        password_hash, server = conn.execute(
            "SELECT u.password_hash, c.media_server_id FROM users u, cameras c WHERE c.id = 1"
        ).fetchone()
        stamp = format_stamp(datetime.now(UTC))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO users (id, login, name, password_hash, is_admin, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 0, ?, ?)",
            [(1000 + n, f"u{n:04d}", f"User {n}", password_hash, stamp, stamp)
             for n in range(USERS - 1)] + [(5000, HEAVY, "Heavy", password_hash, stamp, stamp)],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO cameras (id, name, path, media_server_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(n, f"Camera {n}", f"camera{n}", server, stamp) for n in range(2, CAMERAS + 1)],
        )  # fmt: skip
        conn.execute("INSERT INTO camera_grants VALUES (5000, 1)")
        conn.executemany(
            "INSERT INTO downloads (kind, user_id, session_id, camera_id, device, client,"
            " range_from, range_to, status, created_at, updated_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(size, 5000, datetime.now(UTC) - YEAR - timedelta(days=1)),
        )
        # The service counts the rows it inserts as it commits them; these are counted here.
        conn.execute(
            "INSERT INTO download_totals (user_id, camera_id, kind, status, n)"
            " SELECT user_id, camera_id, kind, status, count(*) FROM downloads GROUP BY 1, 2, 3, 4"
        )
        conn.execute("COMMIT")
    if baseline is None:
        return 5000, time.perf_counter() - started
    with sqlite3.connect(baseline) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA cache_size = -1000000")
        for number, script in enumerate(MIGRATIONS[:FIELD_SIZE], start=1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        conn.execute("ATTACH ? AS new", (str(path),))
        conn.execute("BEGIN")
        for table in ("users", "media_servers", "cameras", "camera_grants", "downloads"):
            columns = ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_info({table})"))
            copy = f"INSERT INTO main.{table} SELECT {columns} FROM new.{table}"  # noqa: S608
            conn.execute(copy)
        conn.execute("COMMIT")
        conn.execute("DETACH new")
    return 5000, time.perf_counter() - started


# Measuring


# A slow baseline stops sampling after this long (with at least MIN_ROUNDS samples).
BUDGET = 20.0
MIN_ROUNDS = 3


async def median_ms(work: Callable[[], Awaitable[object]], rounds: int) -> float:
    """The median wall time of `work`, in ms, after one warm-up; at most ~BUDGET s of it."""
    await work()
    times: list[float] = []
    spent = 0.0
    while len(times) < rounds and (len(times) < MIN_ROUNDS or spent < BUDGET):
        started = time.perf_counter()
        await work()
        times.append(elapsed := time.perf_counter() - started)
        spent += elapsed
    return statistics.median(times) * 1000


class Baseline:
    """The old queries on the baseline file, through one aiosqlite connection as before."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def all(self, sql: str, params: list[Any]) -> list[Any]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def page(self, clause: str, params: list[Any], offset: int) -> list[Any]:
        return await self.all(old_list_sql(clause), [*params, PER_PAGE, offset])


class Http:
    """An operator's browser session and a heavy user's token on the running service."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.token = ""

    async def sign_in(self) -> None:
        async with self.session.get(f"{self.base}/login") as response:
            csrf = _CSRF.search(await response.text())
        assert csrf, "no CSRF field on /login"
        form = {"login": "bench", "password": BENCH_PASSWORD, "_csrf": csrf.group(1)}
        async with self.session.post(f"{self.base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 303, r.status
        body = await self.api(
            "POST", "/api/v1/token", json={"login": HEAVY, "password": BENCH_PASSWORD}
        )
        self.token = body["access_token"]

    async def page(self, path: str) -> str:
        async with self.session.get(self.base + path) as response:
            assert response.status == 200, (path, response.status)
            return await response.text()

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"X-Client": "ios-cctv", "X-UUID": "heavy-phone"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as r:
            assert r.status < 300, (path, r.status, await r.text())
            return await r.json()


async def p50_while(
    lookup: Callable[[], Awaitable[object]], load: Callable[[], Awaitable[object]], rounds: int
) -> tuple[float, float]:
    """p50 of `lookup` idle, then while two tasks run `load` back to back (ms)."""
    idle = await median_ms(lookup, rounds)
    running = True

    async def loader() -> None:
        while running:
            await load()

    loaders = [asyncio.create_task(loader()) for _ in range(2)]
    await asyncio.sleep(0.2)
    try:
        busy = await median_ms(lookup, rounds)
    finally:
        running = False
        await asyncio.gather(*loaders)
    return idle, busy


async def _pages_until(base: str, last_page: int, stop: EventType) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        http = Http(session, base)
        await http.sign_in()
        turn = 0
        while not stop.is_set():
            await http.page(f"/history?page={last_page if turn % 2 else 1}")
            turn += 1


def _browser(base: str, last_page: int, stop: EventType) -> None:
    """An operator's browser of its own (a process): page 1 and the last page in turn."""
    asyncio.run(_pages_until(base, last_page, stop))


def split_cores(service_pid: int) -> None:
    """The service (every thread of it) on the first CPU, this process on the others.

    Phones and browsers are not on the box: on a 2-core machine the benchmark's own clients
    would otherwise take the service's core half the time. Nothing changes on one CPU.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    for task in Path(f"/proc/{service_pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))


async def p50_beside_browsers(
    lookup: Callable[[], Awaitable[object]], base: str, last_page: int, rounds: int
) -> tuple[float, float]:
    """p50 of `lookup` idle, then while two browsers (processes) load `/history` back to back."""
    idle = await median_ms(lookup, rounds)
    stop = multiprocessing.Event()
    browsers = [
        multiprocessing.Process(target=_browser, args=(base, last_page, stop)) for _ in range(2)
    ]
    for browser in browsers:
        browser.start()
    try:
        await asyncio.sleep(1.0)  # both signed in and loading
        busy = await median_ms(lookup, rounds)
    finally:
        stop.set()
        for browser in browsers:
            browser.join(timeout=30)
    return idle, busy


@contextlib.contextmanager
def gc_passes() -> Iterator[list[tuple[int, float]]]:
    """(generation, ms) of each pass of the cyclic garbage collector while the block runs.

    The block starts just after a full collection, so what the collector does during it
    comes from the block's own allocations, not from whatever ran before it.
    """
    passes: list[tuple[int, float]] = []
    started = 0.0

    def record(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            passes.append((info["generation"], (time.perf_counter() - started) * 1000))

    gc.collect()
    gc.callbacks.append(record)
    try:
        yield passes
    finally:
        gc.callbacks.remove(record)


async def _swept(
    ticker: Ticker, work: Callable[[], Awaitable[object]]
) -> tuple[float, float, list[float]]:
    """(wall s, CPU s of the whole process, the ticker's lateness) of one sweep.

    CPU time is the steadier figure on a shared machine: it leaves out the waits for a core.
    """
    cpu = time.process_time()
    seconds, late = await ticker.measure(work)
    return seconds, time.process_time() - cpu, late


def _gc_summary(passes: list[tuple[int, float]]) -> str:
    """How many collector passes, how many of them full, and the longest."""
    full = sum(1 for generation, _ in passes if generation == 2)
    longest = max((ms for _, ms in passes), default=0.0)
    return f"gc {len(passes)} passes ({full} full), longest {longest:.1f} ms"


def previous_copy(baseline: Path, previous: Path) -> None:
    """The baseline's rows under the schema as it was before the last sweep migration."""
    with sqlite3.connect(baseline) as source, sqlite3.connect(previous) as copy:
        source.backup(copy)
    with sqlite3.connect(previous) as conn:
        conn.execute("PRAGMA cache_size = -1000000")
        for number, script in enumerate(MIGRATIONS[FIELD_SIZE:SWEEP], start=FIELD_SIZE + 1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")


async def measure_size(
    work: Path,
    size: int,
    rounds: int,
    sweep: bool,
    ports: int = PORTS,
    only_sweep: bool = False,
) -> dict[str, Any]:
    """Every figure for one size (with `only_sweep`, the cleanup sweep alone)."""
    data = work / f"data-{size}"
    footage_start = small_footage(data, 10)
    port = free_port(ports)
    media_port = free_port(port + 1)
    service = bench_service(
        data, port, VMS_MEDIA_PORT=str(media_port), VMS_MAX_PENDING_PER_DEVICE="1000"
    )
    path, baseline_path = data / "vms.sqlite3", work / f"baseline-{size}.sqlite3"
    heavy, seconds = await asyncio.to_thread(build, path, baseline_path, size)
    print(f"{size:,} rows built (and the baseline copy) in {seconds:.1f} s", flush=True)
    out: dict[str, Any] = {}
    if only_sweep:
        out["sweep"] = await _sweep(path, baseline_path, min(100_000, size // 10))
        return out
    last_offset = (size - 1) // PER_PAGE * PER_PAGE
    heavy_archives = (size + 1) // 2
    heavy_last = (heavy_archives - 1) // PER_PAGE * PER_PAGE
    old_conn = await aiosqlite.connect(baseline_path, isolation_level=None)
    old = Baseline(old_conn)
    db = await Database.open(path)
    try:
        both = "d.kind IN (?, ?)"
        kinds = [Kind.LINK, Kind.ARCHIVE]
        newest = (await old.page(both, kinds, 0))[0]
        since = newest[15]
        archive = "d.kind IN (?) AND d.user_id = ?"
        out["page1"] = [await median_ms(lambda: old.page(both, kinds, 0), rounds)]
        out["last"] = [await median_ms(lambda: old.page(both, kinds, last_offset), rounds)]
        out["poll"] = [
            await median_ms(
                lambda: old.page(f"{both} AND d.created_at >= ?", [*kinds, since + "1"], 0), rounds
            )
        ]
        out["api_last"] = [
            await median_ms(lambda: old.page(archive, [Kind.ARCHIVE, heavy], heavy_last), rounds)
        ]
        every = (Kind.LINK, Kind.ARCHIVE)
        out["page1"].append(
            await median_ms(lambda: db.list_downloads(user_id=None, kinds=every, limit=25), rounds)
        )
        out["last"].append(
            await median_ms(
                lambda: db.list_downloads(user_id=None, kinds=every, limit=25, offset=last_offset),
                rounds,
            )
        )
        after = datetime.fromisoformat(since.replace("Z", "+00:00")) + timedelta(microseconds=1)
        out["poll"].append(
            await median_ms(
                lambda: db.list_downloads(user_id=None, kinds=every, created_from=after, limit=25),
                rounds,
            )
        )
        out["api_last"].append(
            await median_ms(
                lambda: db.list_downloads(
                    user_id=heavy, kinds=(Kind.ARCHIVE,), limit=25, offset=heavy_last
                ),
                rounds,
            )
        )
        some_id = newest[0]
        out["lookup_old"] = await p50_while(
            lambda: old.all(OLD_BY_ID, [some_id]),
            lambda: old.page(both, kinds, last_offset),
            rounds * 2,
        )
        out["lookup_store"] = await p50_while(
            lambda: db.download(some_id),
            lambda: db.list_downloads(user_id=None, kinds=every, limit=25, offset=last_offset),
            rounds * 2,
        )
        out["phone_old"] = await median_ms(lambda: _old_phone_checks(old, heavy), rounds)
    finally:
        await db.close()
    with service.running():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            http = Http(session, f"http://127.0.0.1:{port}")
            await http.sign_in()
            last_page = last_offset // PER_PAGE + 1
            first = await http.page("/history")
            ids = ",".join(re.findall(r'data-id="(\d+)"', first)[:PER_PAGE]) or str(some_id)
            poll = f"/history/status?ids={ids}&since={since}"
            out["page1"].append(await median_ms(lambda: http.page("/history"), rounds))
            out["last"].append(
                await median_ms(lambda: http.page(f"/history?page={last_page}"), rounds)
            )
            out["poll"].append(await median_ms(lambda: http.page(poll), rounds))
            api_page = heavy_last // PER_PAGE + 1
            out["api_last"].append(
                await median_ms(
                    lambda: http.api("GET", f"/api/v1/downloads?kind=archive&page={api_page}"),
                    rounds,
                )
            )
            pages = iter(range(10**9))

            async def history_load() -> None:
                page = 1 if next(pages) % 2 else last_page
                await http.page(f"/history?page={page}")

            newest_heavy = (await http.api("GET", "/api/v1/downloads?kind=archive&per_page=1"))[
                "data"
            ][0]["id"]
            out["lookup_http"] = await p50_while(
                lambda: http.api("GET", f"/api/v1/downloads/{newest_heavy}"),
                history_load,
                rounds * 2,
            )
            out["phone"] = await _phone_requests(http, footage_start, rounds)
    if sweep:
        out["sweep"] = await _sweep(path, baseline_path, min(100_000, size // 10))
    return out


async def lookup_under_pages(
    data: Path, size: int, root: Path, rounds: int, ports: int, *, split: bool
) -> tuple[float, float]:
    """`GET /api/v1/downloads/{id}` p50 over HTTP, idle and while two browsers load `/history`.

    They ask for page 1 and the last page in turn, back to back, of checkout `root`'s service;
    with `split`, the service has a core and the clients the other (`split_cores`).
    """
    port = free_port(ports)
    service = Service(data, port, VMS_MEDIA_PORT=str(free_port(port + 1)))
    service.root = root
    last_page = (size - 1) // PER_PAGE + 1
    cpus = os.sched_getaffinity(0)
    with service.running():
        if split:
            split_cores(service.pid)
        try:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                base = f"http://127.0.0.1:{port}"
                http = Http(session, base)
                await http.sign_in()
                newest = await http.api("GET", "/api/v1/downloads?kind=archive&per_page=1")
                one = newest["data"][0]["id"]
                return await p50_beside_browsers(
                    lambda: http.api("GET", f"/api/v1/downloads/{one}"), base, last_page, rounds
                )
        finally:
            os.sched_setaffinity(0, cpus)


def checkout(rev: str, into: Path) -> None:
    """The files of git revision `rev` of this repository, in `into`."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)


async def lookups(args: argparse.Namespace) -> None:
    """`growth.py history --lookup-only`: the lookup under page loads, new beside `--against`."""
    work = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    try:
        trees = {"new": ROOT}
        if args.against:
            trees = {args.against: work / "baseline-tree", **trees}
            trees[args.against].mkdir()
            checkout(args.against, trees[args.against])
        for size in args.sizes:
            data = work / f"data-{size}"
            small_footage(data, 1)
            bench_service(
                data, free_port(args.port_base)
            )  # creates the schema, camera 1 and `bench`
            _, seconds = await asyncio.to_thread(build, data / "vms.sqlite3", None, size)
            print(f"{size:,} rows built in {seconds:.1f} s", flush=True)
            # Alternately, so both see the same machine; medians of each code's rounds.
            for split in (True, False):
                runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
                for _ in range(args.repeat):
                    for name, root in trees.items():
                        runs[name].append(
                            await lookup_under_pages(
                                data, size, root, args.requests * 2, args.port_base, split=split
                            )
                        )
                cores = "service on its own core" if split else "service and clients sharing cores"
                for name, figures in runs.items():
                    idle = statistics.median(a for a, _ in figures)
                    busy = statistics.median(b for _, b in figures)
                    each = ", ".join(f"{a:.2f} -> {b:.2f}" for a, b in figures)
                    print(
                        f"  {size:,} rows, {name}, {cores}: idle {idle:.2f} ms -> under load"
                        f" {busy:.2f} ms ({busy / idle:.1f}x; target <= 2x)  [runs: {each}]",
                        flush=True,
                    )
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _old_phone_checks(old: Baseline, heavy: int) -> None:
    """What the old phone request read under its global lock: the same archive, the cap."""
    now = datetime.now(UTC).timestamp()
    statuses = [Status.QUEUED, Status.RUNNING, Status.READY]
    await old.all(OLD_PENDING_ARCHIVE, [f"bench-{heavy}", 1, now - 60, now, *statuses])
    await old.all(OLD_COUNT_PENDING, [heavy, "heavy-phone", Status.QUEUED, Status.RUNNING])


async def _phone_requests(http: Http, start: datetime, rounds: int) -> tuple[float, float]:
    """Median of one phone archive request at a time, and the last of five sent at once.

    Each timed request waits (untimed) for the archives before it to be made, so it measures
    the request, not the fetch and remux of the one before.
    """
    counter = iter(range(10**6))
    made: list[int] = []

    async def ask() -> float:
        second = next(counter)
        frm = start + timedelta(seconds=second % 400)
        to = frm + timedelta(seconds=30 + second // 400)
        query = {
            "from": frm.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "to": to.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        started = time.perf_counter()
        body = await http.api("GET", "/api/v1/cameras/1/archive/link", params=query)
        made.append(body["download"]["id"])
        return (time.perf_counter() - started) * 1000

    async def settled() -> None:
        deadline = time.monotonic() + 60
        while made and time.monotonic() < deadline:
            found = await http.api("GET", f"/api/v1/downloads/{made[-1]}")
            if found["data"]["status"] in ("ready", "failed", "expired", "cancelled"):
                made.pop()
            else:
                await asyncio.sleep(0.05)

    await ask()
    singles = []
    for _ in range(rounds):
        await settled()
        singles.append(await ask())
    lasts = []
    for _ in range(3):
        await settled()
        lasts.append(max(await asyncio.gather(*(ask() for _ in range(5)))))
    await settled()
    return statistics.median(singles), statistics.median(lasts)


async def _sweep(path: Path, baseline_path: Path, due: int) -> dict[str, Any]:
    """The cleanup sweep of `due` archives past their lifetime: new, previous, old; loop lag."""
    now = datetime.now(UTC)
    past = (now - timedelta(hours=1)).timestamp()
    previous_path = baseline_path.with_name(f"previous-{baseline_path.name}")
    await asyncio.to_thread(previous_copy, baseline_path, previous_path)
    for file in (path, baseline_path, previous_path):
        with sqlite3.connect(file) as plain:
            plain.execute(
                "UPDATE downloads SET status = 'ready', expires_at = ? WHERE id IN"
                " (SELECT id FROM downloads WHERE kind = 'archive' AND status = 'expired'"
                " ORDER BY id LIMIT ?)",
                (past, due),
            )
    files = ArchiveFiles(path.parent / "archives", Urls("http://127.0.0.1:1", {}), b"bench")
    ticker = Ticker()
    db = await Database.open(path)
    try:
        with gc_passes() as new_gc:
            new_seconds, new_cpu, new_late = await _swept(
                ticker, lambda: purge_expired(db, files, now)
            )
        left = len(await db.archives_due(now))
    finally:
        await db.close()
    conn = await aiosqlite.connect(baseline_path, isolation_level=None)
    old = Baseline(conn)

    async def old_purge() -> None:
        loop = asyncio.get_running_loop()
        ids = [r[0] for r in await old.all(OLD_DUE, [Status.READY, now.timestamp()])]
        stamp = format_stamp(now)
        for index in range(0, len(ids), 500):
            batch = ids[index : index + 500]
            await loop.run_in_executor(None, _delete, files.root, [file_name(i) for i in batch])
            await loop.run_in_executor(None, _delete, files.root, [poster_name(i) for i in batch])
            await old.all(old_mark_expired_sql(len(batch)), [Status.EXPIRED, stamp, *batch])

    try:
        with gc_passes() as old_gc:
            old_seconds, old_cpu, old_late = await _swept(ticker, old_purge)
    finally:
        await conn.close()
    conn = await aiosqlite.connect(previous_path, isolation_level=None)
    await conn.execute("PRAGMA synchronous = NORMAL")
    previous = Baseline(conn)

    async def previous_purge() -> None:
        ids = [r[0] for r in await previous.all(PREVIOUS_DUE, [now.timestamp()])]
        stamp = format_stamp(now)
        for index in range(0, len(ids), 500):
            batch = ids[index : index + 500]
            where = previous_expire_where(len(batch))
            await conn.execute("BEGIN IMMEDIATE")
            sql = f"SELECT user_id, camera_id, kind, status FROM downloads {where}"  # noqa: S608
            before = await previous.all(sql, batch)
            sql = f"UPDATE downloads SET status = ?, progress = 0, updated_at = ? {where}"  # noqa: S608
            await previous.all(sql, [Status.EXPIRED, stamp, *batch])
            await conn.executemany(ADD_TOTALS, moved([(*r, 1) for r in before], Status.EXPIRED))
            await conn.execute("COMMIT")

    try:
        with gc_passes() as previous_gc:
            previous_seconds, previous_cpu, previous_late = await _swept(ticker, previous_purge)
    finally:
        await conn.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{previous_path}{suffix}")
    return {
        "due": due,
        "left": left,
        "new": (new_seconds, max(new_late)),
        "previous": (previous_seconds, max(previous_late)),
        "old": (old_seconds, max(old_late)),
        "cpu": {"new": new_cpu, "previous": previous_cpu, "old": old_cpu},
        "load": os.getloadavg()[0],
        "gc": {
            "new": _gc_summary(new_gc),
            "previous": _gc_summary(previous_gc),
            "old": _gc_summary(old_gc),
        },
    }


# Reporting


def _row(name: str, cells: list[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def report(results: dict[int, dict[str, Any]]) -> None:
    """The issue's history table, baseline beside new, then the other figures."""
    sizes = sorted(results)
    if all(set(r) == {"sweep"} for r in results.values()):
        _report_sweep(results[sizes[-1]]["sweep"], sizes[-1])
        return
    print("\nmedians, ms; each cell: baseline SQL / new store call / new HTTP request")
    print(_row("request", [f"{s:,} rows" for s in sizes]))
    print(_row("---", ["---"] * len(sizes)))
    names = {
        "page1": "operator `/history` page 1",
        "last": "operator `/history` last page",
        "poll": "`/history/status` poll",
        "api_last": "API `/downloads?kind=archive` last page (heavy user)",
    }
    for key, name in names.items():
        cells = [" / ".join(f"{v:.1f}" for v in results[s][key]) for s in sizes]
        print(_row(name, cells))
    smallest, largest = results[sizes[0]], results[sizes[-1]]
    for key, name in names.items():
        ratio = largest[key][2] / smallest[key][2]
        print(f"  {name}: HTTP at {sizes[-1]:,} / at {sizes[0]:,} = {ratio:.2f}x (target <= 2x)")
    print("\n`GET /api/v1/downloads/{id}` p50 ms, idle -> while /history loads run back to back")
    for size in sizes:
        r = results[size]
        cells = [
            f"{a:.2f} -> {b:.2f} ({b / a:.1f}x)"
            for a, b in (r["lookup_old"], r["lookup_store"], r["lookup_http"])
        ]
        print(f"  {size:,} rows: baseline one connection {cells[0]};")
        print(f"    new store {cells[1]}; new HTTP {cells[2]}")
    print("\nphone archive request (heavy user, half the rows are their archives), ms")
    for size in sizes:
        r = results[size]
        one, five = r["phone"]
        print(
            f"  {(size + 1) // 2:,} archives: one {one:.1f}, last of five at once {five:.1f}; "
            f"baseline SQL of the checks alone {r['phone_old']:.1f}"
        )
    print(
        f"  one request at {(sizes[-1] + 1) // 2:,} / at {(sizes[0] + 1) // 2:,} archives = "
        f"{largest['phone'][0] / smallest['phone'][0]:.2f}x (target <= 2x)"
    )
    sweep = largest.get("sweep")
    if sweep:
        _report_sweep(sweep, sizes[-1])


def _report_sweep(sweep: dict[str, Any], size: int) -> None:
    (new_s, new_lag), (old_s, old_lag) = sweep["new"], sweep["old"]
    prev_s, prev_lag = sweep["previous"]
    print(f"\ncleanup sweep of {sweep['due']:,} due archives at {size:,} rows:")
    collector, cpu = sweep["gc"], sweep["cpu"]
    print(f"  new: {new_s:.2f} s, worst loop lag {new_lag:.1f} ms (target < 1 s, < 20 ms)")
    print(f"    CPU {cpu['new']:.2f} s; {collector['new']}")
    print(f"  previous (the schema and sweep before it): {prev_s:.2f} s, lag {prev_lag:.1f} ms")
    print(f"    CPU {cpu['previous']:.2f} s; {collector['previous']}")
    print(f"  baseline: {old_s:.2f} s, worst loop lag {old_lag:.1f} ms")
    print(f"    CPU {cpu['old']:.2f} s; {collector['old']}")
    print(f"  new / previous: {new_s / prev_s:.2f}x; new / baseline: {new_s / old_s:.2f}x")
    print(f"  due left after the new sweep: {sweep['left']}; load average {sweep['load']:.1f}")


async def history(args: argparse.Namespace) -> None:
    """`growth.py history`: build, measure and print every size."""
    work = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    try:
        results = {}
        for size in args.sizes:
            largest = size == max(args.sizes)
            if args.only_sweep and not largest:
                continue
            results[size] = await measure_size(
                work, size, args.requests, largest, args.port_base, only_sweep=args.only_sweep
            )
            shutil.rmtree(work / f"data-{size}", ignore_errors=True)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(work / f"baseline-{size}.sqlite3{suffix}")
            report(results)  # so far, in case a later size is stopped
        print("\n== all sizes ==")
        report(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recordings(args: argparse.Namespace) -> None:
    """`growth.py recordings`: the media server's index beside the scan-per-request baseline."""
    import growth_recordings

    growth_recordings.run(tuple(args.sizes), args.repeat)


def main() -> None:
    """Parse the subcommand and run it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_history = commands.add_parser("history", help="download history at 10k/100k/1M rows")
    run_history.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    run_history.add_argument("--requests", type=int, default=15, help="rounds per median")
    run_history.add_argument(
        "--lookup-only",
        action="store_true",
        help="only the lookup while /history loads (no baseline SQL copy; quicker)",
    )
    run_history.add_argument(
        "--against", metavar="REV", help="with --lookup-only: the git revision to compare with"
    )
    run_history.add_argument("--repeat", type=int, default=3, help="with --lookup-only: runs")
    run_history.add_argument(
        "--port-base", type=int, default=PORTS, help="the first port servers use"
    )
    run_history.add_argument(
        "--only-sweep", action="store_true", help="the cleanup sweep alone, at the largest size"
    )
    run_recordings = commands.add_parser(
        "recordings", help="recordings index at 1 h / 7 d / 30 d of one-minute segments"
    )
    run_recordings.add_argument("--sizes", type=int, nargs="+", default=[60, 10_080, 43_200])
    run_recordings.add_argument("--repeat", type=int, default=5, help="rounds per median")
    args = parser.parse_args()
    if args.command == "history":
        asyncio.run(lookups(args) if args.lookup_only else history(args))
    else:
        recordings(args)


if __name__ == "__main__":
    main()
