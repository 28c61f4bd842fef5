"""On PostgreSQL too, every history page is read along an index in its own order (no sort)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import postgres
from vms.models import Kind, Status
from vms.store.history import Cursor, HistoryQuery
from vms.store.postgres import PgDatabase

pytestmark = pytest.mark.skipif(
    not postgres.wanted(), reason="PostgreSQL-only: runs in the VMS_TEST_DATABASE=postgresql pass"
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROWS = 30_000
QUERIES = [
    HistoryQuery(None, [Kind.LINK]),
    HistoryQuery(None, [Kind.LINK, Kind.ARCHIVE]),
    HistoryQuery(1, [Kind.LINK]),
    HistoryQuery(1, [Kind.LINK, Kind.ARCHIVE]),
    HistoryQuery(None, [Kind.ARCHIVE], camera_id=2),
    HistoryQuery(2, [Kind.ARCHIVE], camera_id=2),
    HistoryQuery(None, [Kind.ARCHIVE], status=Status.FAILED),
    HistoryQuery(1, [Kind.ARCHIVE], status=Status.READY, camera_id=1),
    HistoryQuery(1, [Kind.LINK], created_from=NOW - timedelta(days=3), created_to=NOW),
]


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _plan_nodes(child))]


async def _explain(db: PgDatabase, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    async with db._pool.acquire() as conn:
        text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
    return _plan_nodes(json.loads(text)[0]["Plan"])


@pytest.fixture
async def history(database_url: str) -> AsyncIterator[PgDatabase]:
    """A year of history over three users and two cameras, analysed."""
    db = await PgDatabase.open(database_url)
    for camera_id in (1, 2):
        await db.put_camera(camera_id, f"c{camera_id}", f"camera{camera_id}", "http://m", NOW)
    for login in ("alice", "bob", "carol"):
        await db.create_user(login, login, "x", is_admin=False, now=NOW)
    async with db._pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO downloads (kind, user_id, session_id, camera_id, device, client,"
            " range_from, range_to, status, created_at, updated_at, expires_at)"
            " SELECT CASE WHEN i % 2 = 0 THEN 'archive' ELSE 'link' END, i % 3 + 1, 's',"
            " i % 2 + 1, 'phone', 'ios', 0, 60,"
            " CASE WHEN i % 997 = 0 THEN 'queued'"
            " ELSE (ARRAY['ready', 'failed', 'expired', 'expired'])[i % 4 + 1] END,"
            " to_char(timestamp '2025-03-01' + i * interval '17 minutes',"
            " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '', i FROM generate_series(1, $1) i",
            ROWS,
        )
        await conn.execute("ANALYZE downloads")
    yield db
    await db.close()


async def test_every_history_page_reads_an_index_in_order(history: PgDatabase) -> None:
    """The ids of a page come from an index of downloads: by page number in index order (no
    sort); by cursor, where the planner may sort the few rows left, never by a full scan."""
    bad = {}
    for query in QUERIES:
        for oldest_first in (False, True):
            for cursor in (None, Cursor(NOW - timedelta(days=30), 500, newer=oldest_first)):
                sql, params = query.ids_sql(
                    limit=25, offset=0, oldest_first=oldest_first, cursor=cursor, postgres=True
                )
                kinds = [n["Node Type"] for n in await _explain(history, sql, params)]
                banned = {"Seq Scan"} if cursor else {"Seq Scan", "Sort", "Incremental Sort"}
                if banned & set(kinds) or not any("Index" in kind for kind in kinds):
                    bad[sql] = kinds
    assert not bad, bad


async def test_the_pending_count_and_the_due_archives_use_their_indexes(
    history: PgDatabase,
) -> None:
    """A phone's cap check and the cleanup sweep read the partial indexes made for them."""
    statements: list[str] = []
    await history.set_trace_callback(statements.append)
    await history.count_pending(1, "phone")
    await history.archives_due(datetime.fromtimestamp(100, UTC))
    await asyncio.sleep(0)  # the pool reports a statement just after it ran
    await history.set_trace_callback(None)
    pending = [s for s in statements if s.startswith("SELECT count(*)")]
    due = [s for s in statements if "expires_at <=" in s]
    assert len(pending) == 1 and len(due) == 1, statements
    pending_plan = await _explain(history, pending[0], [1, "phone"])
    due_plan = await _explain(history, due[0], [100.0])
    # Either partial index of pending archives holds just the rows counted.
    pending_indexes = {"downloads_device_status", "downloads_claimable"}
    assert any(n.get("Index Name") in pending_indexes for n in pending_plan), [
        (n["Node Type"], n.get("Index Name")) for n in pending_plan
    ]
    assert any(n.get("Index Name") == "downloads_ready_expiry" for n in due_plan), [
        (n["Node Type"], n.get("Index Name")) for n in due_plan
    ]
