"""What the history page shows: its filters read from the URL, and one row per download."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape

from vms.models import PENDING, Download, Kind, Status
from vms.resources import Resources

PER_PAGE = 25
STATUS_LABELS = {
    Status.QUEUED: "Queued",
    Status.RUNNING: "In progress",
    Status.READY: "Ready",
    Status.FAILED: "Failed",
    Status.CANCELLED: "Cancelled",
    Status.EXPIRED: "Expired",
}
_ID = re.compile(r"^\d{1,12}\Z")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_MAX_PAGE = 1_000_000
# The status filter's value for thick-client links, which have no archive status of their own.
LINKS = "link"
FILTER_LABELS = {**{str(k): v for k, v in STATUS_LABELS.items()}, LINKS: "Thick-client link"}
# Footage this much shorter than asked for is worth a warning (a second or two is rounding).
_PARTIAL_RATIO = 0.9
_PARTIAL_SLACK = 2.0
AGAIN = frozenset({Status.FAILED, Status.CANCELLED, Status.EXPIRED})


@dataclass(frozen=True)
class Filters:
    """The page's state as the URL carries it; invalid values are dropped with a note."""

    camera_id: int | None = None
    user_id: int | None = None
    status: Status | None = None
    links: bool = False
    day_from: date | None = None
    day_to: date | None = None
    page: int = 1
    # A keyset cursor from the pager: the page starts just older (or newer) than this row.
    older_than: int | None = None
    newer_than: int | None = None
    problems: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """True if anything narrows the list."""
        return (
            any(
                v is not None
                for v in (self.camera_id, self.user_id, self.status, self.day_from, self.day_to)
            )
            or self.links
        )

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The kinds of record listed: a status filter means archives, `link` means links."""
        if self.links:
            return (Kind.LINK,)
        if self.status is not None:
            return (Kind.ARCHIVE,)
        return (Kind.LINK, Kind.ARCHIVE)

    def params(self) -> dict[str, str]:
        """The non-empty filters as query parameters, page excluded."""
        values = {
            "camera": self.camera_id,
            "user": self.user_id,
            "status": LINKS if self.links else self.status,
            "from": self.day_from.isoformat() if self.day_from else None,
            "to": self.day_to.isoformat() if self.day_to else None,
        }
        return {k: str(v) for k, v in values.items() if v is not None}

    def url(
        self,
        path: str,
        page: int = 1,
        *,
        older_than: int | None = None,
        newer_than: int | None = None,
    ) -> str:
        """`path` with these filters, `page` (1 left out) and a cursor, if any, in the query."""
        params = self.params()
        if page > 1:
            params["page"] = str(page)
            cursor = {"before": older_than, "after": newer_than}
            params.update({k: str(v) for k, v in cursor.items() if v is not None})
        return f"{path}?{urlencode(params)}" if params else path

    def created_range(self, tz: tzinfo) -> tuple[datetime | None, datetime | None]:
        """The creation-time bounds: whole local days, `to` inclusive."""
        start = datetime.combine(self.day_from, time(), tz) if self.day_from else None
        end = None
        if self.day_to:
            end = datetime.combine(self.day_to + timedelta(days=1), time(), tz)
            end -= timedelta(microseconds=1)
        return start, end


def _day(text: str) -> date | None:
    if not _DAY.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_filters(query: Mapping[str, str], *, operator: bool) -> Filters:
    """Filters from the query string; users other than operators never filter by user."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, key in (("camera", "camera_id"), ("user", "user_id")):
        text = query.get(name, "").strip()
        if name == "user" and not operator:
            continue
        if text:
            if _ID.match(text):
                values[key] = int(text)
            else:
                problems.append(f"The {name} filter was not understood and is ignored.")
    status = query.get("status", "").strip()
    if status:
        if status == LINKS:
            values["links"] = True
        elif status in STATUS_LABELS:
            values["status"] = Status(status)
        else:
            problems.append("The status filter was not understood and is ignored.")
    for name, key in (("from", "day_from"), ("to", "day_to")):
        text = query.get(name, "").strip()
        if text:
            day = _day(text)
            if day is None:
                problems.append(f"The {name} date must look like 2026-11-23; it is ignored.")
            else:
                values[key] = day
    if values.get("day_from") and values.get("day_to") and values["day_to"] < values["day_from"]:
        problems.append("The end date is before the start date; it is ignored.")
        del values["day_to"]
    page_text = query.get("page", "").strip()
    if page_text.isdigit() and len(page_text) < 8 and 1 <= int(page_text) <= _MAX_PAGE:
        values["page"] = int(page_text)
        # A cursor only means something on a later page; a bad one is just not used.
        for name, key in (("before", "older_than"), ("after", "newer_than")):
            text = query.get(name, "").strip()
            if values["page"] > 1 and _ID.match(text):
                values[key] = int(text)
                break
    return Filters(problems=tuple(problems), **values)


@dataclass(frozen=True)
class Row:
    """One download as the page shows it."""

    id: int
    kind: Kind
    name: str
    camera_id: int
    camera_name: str
    user_id: int
    login: str
    created_text: str
    created_iso: str
    range_text: str
    range_start_text: str
    range_end_text: str
    same_day: bool
    range_day: str
    range_from_iso: str
    range_to_iso: str
    duration_text: str
    status: Status
    label: str
    progress: int
    url: str | None
    time_left: str
    message: str | None
    recorded_text: str = ""
    size_text: str = ""
    partial: str = ""
    pending: bool = field(default=False)
    poster: bool = False  # a poster frame was made for the player
    sha256: str = ""  # of a ready archive's file, as its signed manifest states it

    @property
    def can_cancel(self) -> bool:
        """A queued or running archive can be stopped."""
        return self.pending

    @property
    def can_delete(self) -> bool:
        """A ready archive's file can be deleted before its time."""
        return self.kind == Kind.ARCHIVE and self.url is not None

    @property
    def can_ask_again(self) -> bool:
        """A failed, cancelled or expired archive can be made again."""
        return self.kind == Kind.ARCHIVE and self.status in AGAIN

    def live(self) -> dict[str, Any]:
        """The fields the page's script refreshes in place."""
        return {
            "id": self.id,
            "status": self.status,
            "label": self.label,
            "progress": self.progress,
            "url": self.url,
            "name": self.name,
            "time_left": self.time_left,
            "message": self.message,
            "pending": self.pending,
        }


def _when(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y, %H:%M}"


def duration_text(seconds: float) -> str:
    """`1 h 5 min`, `4 min 30 s`, `0 s`: a length of footage."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    if secs and not hours:
        parts.append(f"{secs} s")
    return " ".join(p for p in parts if p) or "0 s"


def size_text(size: int) -> str:
    """`812 KB`, `4.2 MB`, `1.3 GB`: a file size in decimal units, as file managers show it."""
    if size < 1000:
        return f"{size} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        value = size / scale
        if value < 999.5 or unit == "GB":
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def partial_note(asked: float, recorded: float | None) -> str:
    """A warning when the file holds clearly less footage than the range asked for."""
    if recorded is None or asked <= 0:
        return ""
    if recorded >= asked * _PARTIAL_RATIO or asked - recorded <= _PARTIAL_SLACK:
        return ""
    return f"Only {duration_text(recorded)} of the {duration_text(asked)} asked for was recorded."


def time_left(expires_at: datetime | None, now: datetime) -> str:
    """`2 h 59 min left`, `under a minute left`: until a ready archive is deleted."""
    if expires_at is None:
        return ""
    seconds = (expires_at - now).total_seconds()
    if seconds <= 0:
        return "Deleting now"
    if seconds < 60:
        return "Under a minute left"
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min left" if minutes else f"{hours} h left"
    return f"{minutes} min left"


def describe(download: Download, resources: Resources, now: datetime) -> Row:
    """The row of one history record or server-side archive, as of `now`."""
    tz = resources.tz
    start, end = download.range_from.astimezone(tz), download.range_to.astimezone(tz)
    created = download.created_at.astimezone(tz)
    same_day = start.date() == end.date()
    start_text = f"{start:%H:%M:%S}"
    end_text = f"{end:%H:%M:%S}" if same_day else f"{end.day} {end:%b %H:%M:%S}"
    url: str | None = None
    left = ""
    facts = resources.facts(download)
    status = facts.status
    asked = (download.range_to - download.range_from).total_seconds()
    # A file was made (its facts are known) even if it has been deleted since.
    made = download.kind == Kind.ARCHIVE and download.duration is not None
    if download.kind == Kind.LINK:
        label = "Link issued"
    else:
        label = STATUS_LABELS[status]
        if status == Status.READY:
            url = facts.url
            left = time_left(download.expires_at, now)
        elif status == Status.EXPIRED:
            left = "Deleted"
    return Row(
        id=download.id,
        kind=download.kind,
        name=resources.name(download),
        camera_id=download.camera_id,
        camera_name=download.camera_name,
        user_id=download.user_id,
        login=download.login,
        created_text=_when(created),
        created_iso=created.isoformat(timespec="seconds"),
        range_text=f"{start_text} – {end_text}",
        range_start_text=start_text,
        range_end_text=end_text,
        same_day=same_day,
        range_day=f"{start.day} {start:%b %Y}",
        range_from_iso=start.isoformat(timespec="seconds"),
        range_to_iso=end.isoformat(timespec="seconds"),
        duration_text=duration_text(asked),
        status=status,
        label=label,
        progress=download.progress,
        url=url,
        time_left=left,
        message=download.message if status in (Status.FAILED, Status.CANCELLED) else None,
        recorded_text=duration_text(download.duration or 0) if made else "",
        size_text=size_text(download.size) if made else "",
        partial=partial_note(asked, download.duration) if made else "",
        pending=download.kind == Kind.ARCHIVE and status in PENDING,
        poster=status == Status.READY and resources.has_poster(download),
        sha256=(download.sha256 or "") if status == Status.READY else "",
    )


def user_options(choices: Sequence[tuple[int, str, str]], selected: int | None) -> Markup:
    """The user filter's `<option>`s, built in one pass.

    An operator's page lists every user; as a template loop a thousand of them cost more than
    the rest of the page together, and even in one pass their escaping takes the loop for
    milliseconds, so the markup of an unchanged list is kept (compared, not hashed: a
    thousand fresh tuples hash slower than they compare).
    """
    kept = _OPTIONS.get(selected)
    if kept is not None and kept[0] == choices:
        return kept[1]
    parts = []
    for user_id, name, login in choices:
        mark = " selected" if user_id == selected else ""
        parts.append(f'<option value="{user_id}"{mark}>{escape(name)} ({escape(login)})</option>')
    markup = Markup("\n".join(parts))  # noqa: S704 - every text in it went through escape()
    if len(_OPTIONS) >= _OPTIONS_KEPT:
        _OPTIONS.clear()
    _OPTIONS[selected] = (list(choices), markup)
    return markup


# The user lists kept, by the user selected in them: a few operators' filters at once.
_OPTIONS_KEPT = 8
_OPTIONS: dict[int | None, tuple[Sequence[tuple[int, str, str]], Markup]] = {}


def parse_ids(text: str, limit: int = 100) -> list[int]:
    """`1,2,3` as ids; anything else in the list is skipped, at most `limit` kept."""
    ids: list[int] = []
    for part in text.split(",")[:limit]:
        part = part.strip()
        if _ID.match(part):
            ids.append(int(part))
    return ids
