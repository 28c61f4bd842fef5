"""Pagination of a listing, as Laravel's length-aware paginator counts it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """Page `number` of a listing of `total` rows, `per_page` at a time."""

    number: int
    total: int
    per_page: int

    @property
    def offset(self) -> int:
        """Rows before this page."""
        return (self.number - 1) * self.per_page

    @property
    def last(self) -> int:
        """The last page that has rows (1 when there are none)."""
        return max(1, -(-self.total // self.per_page))

    @property
    def first_index(self) -> int:
        """1-based index of the first row on this page."""
        return self.offset + 1

    def last_index(self, shown: int) -> int:
        """1-based index of the last row on this page."""
        return self.first_index + shown - 1

    @property
    def previous(self) -> int | None:
        """The page before, if any."""
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        """The page after, if any."""
        return self.number + 1 if self.number < self.last else None

    def numbers(self) -> list[int | None]:
        """Page numbers to offer, None where a gap is elided: 1 … 4 5 6 … 20."""
        wanted = {1, self.last, *range(self.number - 1, self.number + 2)}
        shown = sorted(n for n in wanted if 1 <= n <= self.last)
        out: list[int | None] = []
        previous = 0
        for n in shown:
            if n - previous > 1:
                out.append(None)
            out.append(n)
            previous = n
        return out
