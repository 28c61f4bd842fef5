"""Reading and writing dates the way the contract spells them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

# RFC 3339 with optional fractional seconds, or the server-local "YYYY-MM-DD HH:MM:SS".
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})([Tt])(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_LOCAL = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\Z")
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z", re.ASCII)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_rfc3339(text: str, *, exact_case: bool = False) -> datetime | None:
    """An aware UTC datetime from RFC 3339; None if invalid.

    RFC 3339 lets `T` and `Z` be lower case; Go's time.RFC3339 (which MediaMTX reads its
    parameters with) does not, so the media server passes `exact_case`.
    """
    if len(text) > 40 or not text.isascii():
        return None
    match = _RFC3339.match(text)
    if match is None:
        return None
    separator, zone = match.group(4), match.group(9)
    if exact_case and (separator != "T" or zone == "z"):
        return None
    fraction = match.group(8) or ""
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    try:
        if zone in ("Z", "z"):
            tz: tzinfo = UTC
        else:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                return None
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        year, month, day = (int(match.group(i)) for i in (1, 2, 3))
        hour, minute, second = (int(match.group(i)) for i in (5, 6, 7))
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # 9999-12-31T23:59:59-23:59 is past what datetime holds
        return None


def parse_date(text: str, tz: tzinfo) -> datetime | None:
    """An aware datetime from RFC 3339 or `YYYY-MM-DD HH:MM:SS` (read in `tz`); None if invalid."""
    # Python's \d and strptime's %Y also take digits such as "٢٠٢٦"; the contract's formats do not.
    if len(text) > 40 or not text.isascii():
        return None
    parsed = parse_rfc3339(text)
    if parsed is not None:
        return parsed
    if _LOCAL.match(text) is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def format_local(moment: datetime, tz: tzinfo) -> str:
    """`YYYY-MM-DD HH:MM:SS` in the server's time zone, as `from`/`to` are answered."""
    local = moment.astimezone(tz)
    return f"{local.year:04d}-{local:%m-%d %H:%M:%S}"


def format_stamp(moment: datetime) -> str:
    """`2026-11-23T10:20:00.000000Z`, as `created_at`/`updated_at` are answered and stored."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%fZ}"


def parse_stamp(text: str) -> datetime:
    """Read back a value written by format_stamp; ValueError for anything else."""
    # fromisoformat is some 30x quicker than strptime, which showed on pages that read a
    # thousand users; the pattern keeps it to exactly format_stamp's form.
    if not _STAMP.match(text):
        raise ValueError(f"not a stored timestamp: {text[:40]!r}")
    return datetime.fromisoformat(text)


def format_rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with the shortest exact fraction, as MediaMTX URLs carry it."""
    moment = moment.astimezone(UTC)
    # %Y is not zero-padded below year 1000 on glibc; RFC 3339 needs four digits.
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def from_unix(seconds: float) -> datetime:
    """An aware UTC datetime from Unix seconds."""
    return datetime.fromtimestamp(seconds, UTC)
