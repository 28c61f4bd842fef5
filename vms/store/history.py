"""The SQL of a history listing: its WHERE clause, its total, and a page read from either end.

Every filter the API and the history page offer is equality on some of user, camera, kind
and status, plus a range on created_at; each such set has an index (equality columns, then
created_at, then the rowid), so a page is read in index order and costs its own rows; ready
archives, whose lifetime keeps them few, are read from the due index and sorted.
Totals without a date range come from `download_totals`, which the store keeps in step.
With `postgres`, the same SQL in PostgreSQL's spelling ($n placeholders, TRUE).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vms.dates import format_stamp
from vms.models import Kind, Status

ALL_KINDS = frozenset(Kind)
# The archives the four status indexes hold (migration 8), with their WHERE as a query must
# repeat it: SQLite uses a partial index only when the query's terms imply its WHERE.
STATUS_INDEXED = frozenset(Status) - {Status.READY, Status.EXPIRED}
IN_STATUS_INDEXES = (
    f"kind = '{Kind.ARCHIVE}' AND status <> '{Status.READY}' AND status <> '{Status.EXPIRED}'"
)
# Ready archives are in the due index alone, which holds every one of them (few: their
# lifetime bounds them, not the history); its WHERE, and the index a listing of them reads.
READY_ARCHIVE = f"kind = '{Kind.ARCHIVE}' AND status = '{Status.READY}'"
READY_INDEX = "downloads_ready_expiry"
_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """`sql` with each `?` replaced by PostgreSQL's `$1`, `$2`, ... in order."""
    count = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


def _spelt(clause: str, sql: str, postgres: bool) -> str:
    if not postgres:
        return sql
    return numbered(sql.replace(" WHERE 1", " WHERE TRUE") if clause == "1" else sql)


@dataclass(frozen=True)
class Cursor:
    """A keyset position: rows older than the row with this stamp and id (newer if `newer`)."""

    created_at: datetime
    id: int
    newer: bool = False


@dataclass(frozen=True)
class HistoryQuery:
    """Which downloads a listing shows; user None means everyone's."""

    user_id: int | None
    kinds: Sequence[Kind]
    created_from: datetime | None = None
    created_to: datetime | None = None
    camera_id: int | None = None
    status: Status | None = None

    def _equalities(self, table: str) -> tuple[list[str], list[Any]]:
        terms: list[str] = []
        params: list[Any] = []
        if self.user_id is not None:
            terms.append(f"{table}user_id = ?")
            params.append(self.user_id)
        if self.camera_id is not None:
            terms.append(f"{table}camera_id = ?")
            params.append(self.camera_id)
        kinds = set(self.kinds)
        if kinds != ALL_KINDS:
            # Literals from the enum, never from input: every call gets the same plan.
            either = " OR ".join(f"{table}kind = '{k}'" for k in sorted(kinds))
            terms.append(f"({either})")
        if self.status is not None:
            terms.append(f"{table}status = ?")
            params.append(str(self.status))
        return terms, params

    @property
    def _archives_only(self) -> bool:
        return set(self.kinds) == {Kind.ARCHIVE}

    def source(self, *, postgres: bool = False) -> str:
        """`downloads d`, pinned to the due index for ready archives (sorted after: few rows).

        Every other index the planner could take for them (kind, user, camera: equality, in
        order) holds the whole history, most of it expired. PostgreSQL takes no such hint;
        its planner weighs the partial index by its statistics.
        """
        if not postgres and self._archives_only and self.status == Status.READY:
            return f"downloads d INDEXED BY {READY_INDEX}"
        return "downloads d"

    def where(self, cursor: Cursor | None = None) -> tuple[str, list[Any]]:
        """The condition on `downloads d` (with `cursor`, only rows older than it)."""
        terms, params = self._equalities("d.")
        if self._archives_only and self.status in STATUS_INDEXED:
            terms.append(f"({IN_STATUS_INDEXES})")
        elif self._archives_only and self.status == Status.READY:
            terms.append(f"({READY_ARCHIVE})")
        if self.created_from is not None:
            terms.append("d.created_at >= ?")
            params.append(format_stamp(self.created_from))
        if self.created_to is not None:
            terms.append("d.created_at <= ?")
            params.append(format_stamp(self.created_to))
        if cursor is not None:
            # The range term walks the index; the second only drops ties already shown.
            stamp = format_stamp(cursor.created_at)
            if cursor.newer:
                terms.append("d.created_at >= ? AND (d.created_at > ? OR d.id > ?)")
            else:
                terms.append("d.created_at <= ? AND (d.created_at < ? OR d.id < ?)")
            params += [stamp, stamp, cursor.id]
        return " AND ".join(terms) or "1", params

    def total_sql(self, *, postgres: bool = False) -> tuple[str, list[Any]]:
        """A statement whose one value is how many rows match."""
        if self.created_from is None and self.created_to is None:
            terms, params = self._equalities("")
            clause = " AND ".join(terms) or "1"
            sql = f"SELECT coalesce(sum(n), 0) FROM download_totals WHERE {clause}"
            return _spelt(clause, sql, postgres), params
        clause, params = self.where()
        sql = f"SELECT count(*) FROM {self.source(postgres=postgres)} WHERE {clause}"
        return _spelt(clause, sql, postgres), params

    def ids_sql(
        self,
        *,
        limit: int,
        offset: int,
        oldest_first: bool,
        cursor: Cursor | None = None,
        postgres: bool = False,
    ) -> tuple[str, list[Any]]:
        """A subquery of the ids of one page, read along the index from one end."""
        clause, params = self.where(cursor)
        order = "ASC" if oldest_first else "DESC"
        sql = (
            f"SELECT d.id FROM {self.source(postgres=postgres)} WHERE {clause}"
            f" ORDER BY d.created_at {order}, d.id {order} LIMIT ? OFFSET ?"
        )
        return _spelt(clause, sql, postgres), [*params, limit, offset]


def page_window(total: int, limit: int, offset: int) -> tuple[int, int, bool] | None:
    """How to read rows [offset, offset + limit) of `total`: (limit, offset, oldest_first).

    A page past the middle is read from the oldest end, so the last page costs what the first
    does. None when the page is empty.
    """
    if limit <= 0 or offset >= total:
        return None
    shown = min(limit, total - offset)
    from_end = total - offset - shown
    if from_end < offset:
        return shown, from_end, True
    return shown, offset, False
