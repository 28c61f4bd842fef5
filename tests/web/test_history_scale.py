"""History at field size: every list, filter, sort and total the API and the page offer is
served by an index (checked with EXPLAIN QUERY PLAN on the statements they really run), and
the totals kept beside the rows stay right as rows are added and change status."""

from __future__ import annotations

import html
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import postgres
from tests.support.pages import Browser, add_downloads, signed_in
from tests.support.service import PHONE, Client, bearer, login
from vms import appkeys
from vms.archive import cleanup
from vms.archive.cleanup import purge_expired
from vms.config import Config
from vms.models import Kind, Status
from vms.store import MIGRATIONS, Database, database
from vms.store import postgres as pg_store
from vms.store.history import IN_STATUS_INDEXES, READY_ARCHIVE, READY_INDEX
from vms.web.history import PER_PAGE

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# The plans below are SQLite's; tests/store/test_postgres_plans.py checks PostgreSQL's.
sqlite_plans = pytest.mark.skipif(
    postgres.wanted(), reason="SQLite-only: EXPLAIN QUERY PLAN on the SQLite file"
)
_PAGE_QUERIES = [
    "",
    "page=2",
    "page=3",
    "camera=1",
    "user={alice}",
    "user={alice}&camera=1",
    "status=link",
    "status=ready",
    "status=failed&camera=1",
    "status=ready&user={alice}",
    "status=ready&user={alice}&camera=1",
    "status=ready&from=2026-03-01&page=2",
    "status=cancelled&user={alice}",
    "status=expired",
    "status=expired&user={alice}",
    "status=expired&camera=1&page=2",
    "status=expired&user={alice}&camera=1",
    "status=link&user={bob}&camera=2",
    "from=2026-03-01",
    "from=2026-03-01&to=2026-03-01&user={alice}&status=link",
    "to=2026-03-01&camera=2&page=2",
    "page=2&before=30",
    "page=2&after=10&status=link",
]
_API_QUERIES = [
    "",
    "page=2",
    "kind=archive",
    "kind=all",
    "kind=all&page=3",
    "from=2026-03-01T00:00:00Z",
]


def _bad_steps(plan: list[str]) -> list[str]:
    """Plan steps that read all of downloads or sort it: a scan not in index order, a sort.

    A sort of a bounded few is fine: the ready archives (the due index holds them all, and
    their lifetime keeps them few), or a cleanup batch found by primary key.
    """
    return [
        step
        for before, step in zip(["", *plan], plan, strict=False)
        if ("TEMP B-TREE" in step and READY_INDEX not in before and "PRIMARY KEY" not in before)
        or (step.startswith(("SCAN d", "SCAN downloads")) and "INDEX" not in step)
    ]


def _explained(path: str, statements: list[str]) -> dict[str, list[str]]:
    """Each SELECT or UPDATE that touches downloads, with its query plan steps."""
    plans = {}
    with sqlite3.connect(path) as conn:
        for sql in statements:
            if "downloads" not in sql or not sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
                continue
            steps = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            plans[sql] = [str(step[3]) for step in steps]
    return plans


async def _seed(service: Client) -> dict[str, int]:
    db = service.app[appkeys.DB]
    users = {u.login: u.id for u in await db.users()}
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    await add_downloads(service, users["alice"], 1, 30, start=start)
    # No ready archives: the service's cleanup expires a ready archive that has no file.
    await add_downloads(
        service, users["alice"], 1, 5, kind=Kind.ARCHIVE, status=Status.CANCELLED, start=start
    )
    await add_downloads(service, users["bob"], 2, 30, start=start + timedelta(hours=30))
    await add_downloads(
        service, users["bob"], 2, 4, kind=Kind.ARCHIVE, status=Status.FAILED, start=start
    )
    return users


async def _add_ready(service: Client, user_id: int, camera_id: int, count: int) -> list[int]:
    """Ready archives with their files on disk and hours to live, as the cleanup leaves them."""
    db, files = service.app[appkeys.DB], service.app[appkeys.FILES]
    files.root.mkdir(parents=True, exist_ok=True)
    made = await add_downloads(service, user_id, camera_id, count, kind=Kind.ARCHIVE)
    for download in made:
        files.path(download.id).write_bytes(b"mp4")
        await db.update_download(
            download.id, NOW, expires_at=datetime.now(UTC) + timedelta(hours=3)
        )
    return [d.id for d in made]


def _index_of(plan: list[str]) -> str:
    """The index a plan reads downloads by (past the primary key of a page's outer query)."""
    for step in plan:
        found = re.match(r"(?:SCAN|SEARCH) (?:d|downloads) USING (?:COVERING )?INDEX (\w+)", step)
        if found:
            return found.group(1)
    return "none"


@sqlite_plans
async def test_every_history_listing_and_total_is_served_by_an_index(
    service: Client, browsers: Callable[[], Browser], config: Config
) -> None:
    """Pages, filters, the status poll and the API list neither scan nor sort downloads."""
    users = await _seed(service)
    await _add_ready(service, users["alice"], 1, 3)
    db = service.app[appkeys.DB]
    operator = await signed_in(browsers, "admin")
    alice = await signed_in(browsers, "alice")
    token = await login(service, "alice")
    statements: list[str] = []
    await db.set_trace_callback(statements.append)
    try:
        for query in _PAGE_QUERIES:
            text = query.format(**users)
            await operator.page(f"/history?{text}")
            await alice.page(f"/history?{text}")
            poll = f"/history/status?ids=1,2,3&since=2026-03-01T00:00:00.000000Z&{text}"
            assert (await operator.get(poll)).status == 200
        for query in _API_QUERIES:
            response = await service.get(f"/api/v1/downloads?{query}", headers=bearer(token))
            assert response.status == 200
    finally:
        await db.set_trace_callback(None)
    plans = _explained(str(config.database_path), statements)
    assert len(plans) > len(_PAGE_QUERIES)
    bad = {sql: _bad_steps(plan) for sql, plan in plans.items() if _bad_steps(plan)}
    assert not bad, bad
    # A status filter reads the index that holds its rows: a status index, the due index
    # for ready archives, a kind index for expired ones (they are in no status index).
    seen: dict[str, set[str]] = {}
    for sql, plan in plans.items():
        status = re.search(r"d\.status = '([a-z ]+)'", sql)
        if status:
            seen.setdefault(status.group(1), set()).add(_index_of(plan))
    assert seen.keys() >= {"ready", "failed", "expired"}, seen
    assert seen["ready"] == {READY_INDEX}, seen
    assert all("status" in i for i in seen["failed"]), seen
    assert not any("status" in i or "ready" in i for i in seen["expired"]), seen


@sqlite_plans
async def test_the_status_indexes_hold_what_the_queries_repeat(config: Config) -> None:
    """Each partial index's WHERE is the text the queries that must use it spell out."""
    db = await Database.open(config.database_path)
    await db.close()
    with sqlite3.connect(config.database_path) as conn:
        found = dict(
            conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE ?",
                ("downloads_%status_created",),
            ).fetchall()
        )
        due = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (READY_INDEX,)
        ).fetchone()[0]
    assert len(found) == 4
    assert all(
        " ".join(sql.split()).endswith(f"WHERE {IN_STATUS_INDEXES}") for sql in found.values()
    )
    assert " ".join(due.split()).endswith(f"WHERE {READY_ARCHIVE}")


@sqlite_plans
async def test_cleanup_and_the_pending_count_use_their_indexes(
    service: Client, config: Config
) -> None:
    """The cleanup sweep and a phone's archive request find their rows by index or key."""
    db = service.app[appkeys.DB]
    users = await _seed(service)
    made = await add_downloads(service, users["alice"], 1, 3, kind=Kind.ARCHIVE)
    for download in made:
        await db.update_download(download.id, NOW, expires_at=NOW - timedelta(hours=1))
    statements: list[str] = []
    await db.set_trace_callback(statements.append)
    try:
        await purge_expired(db, service.app[appkeys.FILES], NOW)
        phone = await login(service, device=PHONE, x_client="ios-cctv")
        await db.count_pending(users["alice"], PHONE)
        assert phone["access_token"]
    finally:
        await db.set_trace_callback(None)
    plans = _explained(str(config.database_path), statements)
    pending = [p for sql, p in plans.items() if "count(*)" in sql and "device" in sql]
    expire = [p for sql, p in plans.items() if sql.startswith("UPDATE downloads SET status")]
    assert pending and expire
    assert all(any("downloads_device_status" in step for step in p) for p in pending), pending
    assert all(any("PRIMARY KEY" in step for step in p) for p in expire), expire
    # Which archives may own a file: the ready ones from the due index, the pending ones
    # from the pending-count index; neither walks the history.
    statuses = [p for sql, p in plans.items() if "UNION ALL" in sql]
    assert statuses and all(
        any(READY_INDEX in step for step in p)
        and any("downloads_device_status" in step for step in p)
        for p in statuses
    ), statuses
    bad = {sql: _bad_steps(plan) for sql, plan in plans.items() if _bad_steps(plan)}
    assert not bad, bad


async def _page_total(browser: Browser, query: str) -> int:
    html = await browser.page(f"/history?{query}")
    marker = '<p class="total"><strong>'
    return int(html[html.index(marker) + len(marker) :].split("<", 1)[0])


async def test_totals_follow_new_rows_and_status_changes(
    service: Client, browsers: Callable[[], Browser]
) -> None:
    """The page's record counts stay exact as rows are added, fail, and expire."""
    users = await _seed(service)
    db = service.app[appkeys.DB]
    operator = await signed_in(browsers, "admin")
    assert await _page_total(operator, "") == 69
    assert await _page_total(operator, "status=failed") == 4
    assert await _page_total(operator, f"user={users['alice']}&status=link") == 30
    made = await add_downloads(service, users["alice"], 1, 3, kind=Kind.ARCHIVE)
    await db.update_download(made[0].id, NOW, status=Status.FAILED)
    await db.mark_expired([made[1].id, made[2].id], NOW)
    assert await _page_total(operator, "") == 72
    assert await _page_total(operator, "status=failed") == 5
    assert await _page_total(operator, "status=expired&camera=1") == 2
    assert await _page_total(operator, "status=cancelled&camera=1") == 5
    # Expiring again, or together with a failed one, counts nothing twice.
    assert await db.mark_expired([made[0].id, made[1].id, made[2].id], NOW) == 1
    assert await _page_total(operator, "status=expired&camera=1") == 3
    assert await _page_total(operator, "status=failed") == 4
    assert await _page_total(operator, "") == 72
    expired = await operator.page("/history?status=expired")
    assert sorted(_ids(expired)) == sorted(d.id for d in made)


async def test_an_existing_history_gets_its_totals_when_migrated(config: Config) -> None:
    """Rows written before the totals existed are counted once the file is migrated."""
    step = next(i for i, script in enumerate(MIGRATIONS) if "download_totals" in script)
    path = config.database_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        for number, script in enumerate(MIGRATIONS[:step], start=1):
            conn.executescript(f"{script}\nPRAGMA user_version = {number};")
        conn.executescript(
            "INSERT INTO users VALUES (1, 'a', 'A', 'h', 0, 'x', 'x');"
            "INSERT INTO media_servers VALUES (1, 'http://127.0.0.1:1');"
            "INSERT INTO cameras VALUES (1, 'Gate', 'camera1', 1, 'x');"
        )
        conn.executemany(
            "INSERT INTO downloads (kind, user_id, session_id, camera_id, device, client,"
            " range_from, range_to, status, created_at, updated_at)"
            " VALUES ('link', 1, 's', 1, 'd', 'c', 0, 1, 'ready', ?, ?)",
            [(f"2026-03-01T00:00:{i:02d}.000000Z",) * 2 for i in range(7)],
        )
    db = await Database.open(path)
    try:
        rows, total = await db.list_downloads(user_id=1, limit=5, offset=5)
        assert total == 7 and [r.id for r in rows] == [2, 1]
    finally:
        await db.close()


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', page)]


def _link(page: str, rel: str) -> str:
    match = re.search(rf'rel="{rel}" href="([^"]+)"', page)
    assert match, f"no {rel} link"
    return html.unescape(match.group(1))


async def test_older_and_newer_links_walk_the_same_pages_by_cursor(
    service: Client, browsers: Callable[[], Browser]
) -> None:
    """Following Older and Newer shows exactly the rows the numbered pages hold."""
    await _seed(service)
    operator = await signed_in(browsers, "admin")
    numbered = [_ids(await operator.page(f"/history?page={n}")) for n in (1, 2, 3)]
    assert [len(p) for p in numbered] == [PER_PAGE, PER_PAGE, 19]
    second_url = _link(await operator.page("/history"), "next")
    assert "before=" in second_url
    second = await operator.page(second_url)
    assert _ids(second) == numbered[1] and "26–50 of 69" in second
    third = await operator.page(_link(second, "next"))
    assert _ids(third) == numbered[2] and "51–69 of 69" in third
    back_url = _link(third, "prev")
    assert "after=" in back_url
    assert _ids(await operator.page(back_url)) == numbered[1]


@pytest.mark.parametrize("cursor", ["before=abc", "before=999999", "after=-1", "before=1e3"])
async def test_a_bad_or_unknown_cursor_falls_back_to_the_page_number(
    service: Client, browsers: Callable[[], Browser], cursor: str
) -> None:
    """A cursor that is not a row id, or names no row, leaves the numbered page as it was."""
    await _seed(service)
    operator = await signed_in(browsers, "admin")
    plain = _ids(await operator.page("/history?page=2"))
    assert _ids(await operator.page(f"/history?page=2&{cursor}")) == plain


async def test_a_cursor_on_someone_elses_row_is_not_used(
    service: Client, browsers: Callable[[], Browser]
) -> None:
    """Alice's pages ignore a cursor naming Bob's row: she sees her own page 2."""
    await _seed(service)
    alice = await signed_in(browsers, "alice")
    plain = _ids(await alice.page("/history?page=2"))
    bobs = await service.app[appkeys.DB].list_downloads(user_id=None, kinds=tuple(Kind), limit=1)
    assert bobs[0][0].login == "bob"
    assert _ids(await alice.page(f"/history?page=2&before={bobs[0][0].id}")) == plain


async def test_the_user_filter_lists_every_user_escaped_with_the_chosen_one_selected(
    service: Client, browsers: Callable[[], Browser], password_hash: str
) -> None:
    """The operator's user picker names each user safely and keeps the filtered one chosen."""
    db = service.app[appkeys.DB]
    odd = await db.create_user("o'neil", "<b>Odd</b> & Co", password_hash, is_admin=False, now=NOW)
    operator = await signed_in(browsers, "admin")
    page = await operator.page(f"/history?user={odd.id}")
    assert f'<option value="{odd.id}" selected>&lt;b&gt;Odd&lt;/b&gt; &amp; Co (o&#39;neil)' in page
    assert "<b>Odd</b>" not in page
    assert page.count("<option value=") >= 4 and page.count(" selected>") >= 1


async def test_a_sweep_of_many_batches_removes_every_file_and_keeps_the_counts(
    service: Client, browsers: Callable[[], Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More due archives than one batch: all lose their files and read expired; counts exact.

    Batches of 40 here (thousands in the service), so a few hundred archives make several.
    """
    monkeypatch.setattr(database, "EXPIRE_BATCH", 40)
    monkeypatch.setattr(pg_store, "EXPIRE_BATCH", 40)
    monkeypatch.setattr(cleanup, "_BATCH", 40)
    db = service.app[appkeys.DB]
    files = service.app[appkeys.FILES]
    users = await _seed(service)
    due = await add_downloads(service, users["alice"], 1, 3 * 40 + 7, kind=Kind.ARCHIVE)
    kept = await add_downloads(service, users["bob"], 2, 3, kind=Kind.ARCHIVE)
    files.root.mkdir(parents=True, exist_ok=True)
    for download in due:
        await db.update_download(download.id, NOW, expires_at=NOW - timedelta(minutes=1))
    for download in [*due, *kept]:
        files.path(download.id).write_bytes(b"mp4")
    for download in kept:
        await db.update_download(download.id, NOW, expires_at=NOW + timedelta(days=1))
    assert await purge_expired(db, files, NOW) == len(due)
    assert not any(files.path(d.id).exists() for d in due)
    assert all(files.path(d.id).exists() for d in kept)
    operator = await signed_in(browsers, "admin")
    assert await _page_total(operator, f"status=expired&user={users['alice']}") == len(due)
    assert await _page_total(operator, "status=ready") == len(kept)
    assert await _page_total(operator, "") == 69 + len(due) + len(kept)
    counts = await db.archive_counts()
    assert counts[Status.EXPIRED] == len(due) and counts[Status.READY] == len(kept)
    page = await operator.page(f"/history?status=expired&user={users['alice']}")
    assert _ids(page) == sorted((d.id for d in due), reverse=True)[:PER_PAGE]


@pytest.mark.parametrize("status", [Status.READY, Status.FAILED, Status.CANCELLED, Status.EXPIRED])
@pytest.mark.parametrize("who", ["", "user", "camera"])
async def test_a_status_filter_lists_exactly_the_archives_in_that_status(
    service: Client, browsers: Callable[[], Browser], status: Status, who: str
) -> None:
    """Each status lists all its archives and nothing else, whichever index holds them."""
    db = service.app[appkeys.DB]
    users = await _seed(service)
    await _add_ready(service, users["alice"], 1, 4)
    await _add_ready(service, users["bob"], 2, 2)
    expired = await add_downloads(service, users["alice"], 1, 3, kind=Kind.ARCHIVE)
    await db.mark_expired([d.id for d in expired], NOW)
    operator = await signed_in(browsers, "admin")
    wanted = await db.archives_in([status])
    query = f"status={status}"
    if who == "user":
        wanted = [d for d in wanted if d.user_id == users["alice"]]
        query += f"&user={users['alice']}"
    elif who == "camera":
        wanted = [d for d in wanted if d.camera_id == 1]
        query += "&camera=1"
    wanted.sort(key=lambda d: (d.created_at, d.id), reverse=True)
    assert _ids(await operator.page(f"/history?{query}")) == [d.id for d in wanted][:PER_PAGE]
    assert await _page_total(operator, query) == len(wanted)
