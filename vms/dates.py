"""Reading and writing dates the way the contract spells them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

# RFC 3339 with optional fractional seconds, or the server-local "YYYY-MM-DD HH:MM:SS".
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_LOCAL = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\Z")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def parse_date(text: str, tz: tzinfo) -> datetime | None:
    """An aware datetime from RFC 3339 or `YYYY-MM-DD HH:MM:SS` (read in `tz`); None if invalid."""
    # Python's \d and strptime's %Y also take digits such as "٢٠٢٦"; the contract's formats do not.
    if len(text) > 40 or not text.isascii():
        return None
    match = _RFC3339.match(text)
    if match:
        fraction = match.group(7) or ""
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        offset = match.group(8).upper()
        iso = "-".join(match.group(i) for i in (1, 2, 3))
        iso += "T" + ":".join(match.group(i) for i in (4, 5, 6))
        iso += "+00:00" if offset == "Z" else offset
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            return None
        if offset != "Z" and abs(int(offset[1:3])) > 23:
            return None
        try:
            return parsed.replace(microsecond=micro).astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:59:59-23:59 is past what datetime holds
            return None
    match = _LOCAL.match(text)
    if match:
        try:
            naive = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
        try:
            return naive.replace(tzinfo=tz).astimezone(UTC)
        except OverflowError:
            return None
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
    """Read back a value written by format_stamp."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


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
