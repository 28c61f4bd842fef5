"""The playback API's query parameters, read as MediaMTX 1.20 reads them, with Go's error texts.

`start` and `end` are read by Go's `time.Parse(time.RFC3339, ...)`, which is laxer than
RFC 3339 (a one-digit hour, a comma before the fraction) and words its errors its own way;
`duration` by MediaMTX's parseDuration: Go's ParseFloat seconds, else a Go duration (`1h30m`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from multidict import MultiMapping

# Longest /get served: an mp4's index grows with its length, so the length is bounded.
MAX_DURATION = 24 * 3600.0

_RFC3339_LAYOUT = "2006-01-02T15:04:05Z07:00"
_PATH_RE = re.compile(r"^[0-9a-zA-Z_\-/.]+\Z")
# Go's ParseFloat: decimal or hexadecimal (with a p exponent) literals, inf, infinity, nan.
_GO_FLOAT = re.compile(r"[+-]?(\d(_?\d)*\.?(\d(_?\d)*)?|\.\d(_?\d)*)([eE][+-]?\d(_?\d)*)?")
_GO_HEX_FLOAT = re.compile(
    r"[+-]?0[xX](_?[0-9a-fA-F]+(\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)[pP][+-]?\d+"
)
_GO_SPECIAL = re.compile(r"[+-]?(inf|infinity)|nan", re.IGNORECASE)
_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_UNITS_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_MAX_NS = 1 << 63


class BadRequest(Exception):
    """A parameter is wrong; the message is MediaMTX's error text."""


def go_quote(text: str) -> str:
    """`text` quoted as Go's time package quotes values in its errors."""
    out = ['"']
    for char in text:
        if char >= "\x80" or char < " ":
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        else:
            out.append("\\" + char if char in '"\\' else char)
    out.append('"')
    return "".join(out)


class _TimeError(Exception):
    def __init__(self, value: str, layout_elem: str, value_elem: str, message: str = "") -> None:
        if message:
            text = f"parsing time {go_quote(value)}{message}"
        else:
            text = (
                f"parsing time {go_quote(value)} as {go_quote(_RFC3339_LAYOUT)}: cannot parse "
                f"{go_quote(value_elem)} as {go_quote(layout_elem)}"
            )
        super().__init__(text)


def _digit(text: str, at: int) -> bool:
    return at < len(text) and "0" <= text[at] <= "9"


def _getnum(text: str, fixed: bool) -> tuple[int, str] | None:
    if not _digit(text, 0):
        return None
    if not _digit(text, 1):
        return None if fixed else (int(text[0]), text[1:])
    return int(text[:2]), text[2:]


def parse_go_rfc3339(raw: str) -> datetime:
    """`raw` as Go's time.Parse(time.RFC3339, raw) reads it (to the microsecond); _TimeError."""
    value = raw
    fields: dict[str, int] = {}
    # (literal before, element, name, fixed width, upper bound for the range check)
    steps = [
        ("", "2006", "year", True, 0),
        ("-", "01", "month", True, 13),
        ("-", "02", "day", True, 0),
        ("T", "15", "hour", False, 24),
        (":", "04", "minute", True, 60),
        (":", "05", "second", True, 60),
    ]
    nanos = 0
    for literal, elem, name, fixed, bound in steps:
        if literal:
            if not value.startswith(literal):
                raise _TimeError(raw, literal, value)
            value = value[len(literal) :]
        hold = value
        if name == "year":
            if len(value) < 4 or not all("0" <= c <= "9" for c in value[:4]):
                raise _TimeError(raw, elem, hold)
            fields[name], value = int(value[:4]), value[4:]
            continue
        got = _getnum(value, fixed)
        if got is None:
            raise _TimeError(raw, elem, hold)
        number, value = got
        if (name == "month" and number == 0) or (bound and number >= bound):
            raise _TimeError(raw, elem, value, f": {name} out of range")
        fields[name] = number
        if name == "second" and len(value) >= 2 and value[0] in ".," and _digit(value, 1):
            n = 2
            while _digit(value, n):
                n += 1
            nanos = int((value[1 : min(n, 10)] + "000000000")[:9])
            value = value[n:]
    hold = value
    if value.startswith("Z"):
        value, offset = value[1:], 0
    else:
        if len(value) < 6 or value[3] != ":":
            raise _TimeError(raw, "Z07:00", hold)
        sign, hours, minutes, value = value[0], value[1:3], value[4:6], value[6:]
        hh, mm = _getnum(hours, True), _getnum(minutes, True)
        if hh is None or mm is None:
            raise _TimeError(raw, "Z07:00", hold)
        if hh[0] > 24:
            raise _TimeError(raw, "Z07:00", value, ": time zone offset hour out of range")
        if mm[0] > 60:
            raise _TimeError(raw, "Z07:00", value, ": time zone offset minute out of range")
        if sign not in "+-":
            raise _TimeError(raw, "Z07:00", hold)
        offset = (hh[0] * 60 + mm[0]) * 60 * (1 if sign == "+" else -1)
    if value:
        raise _TimeError(raw, "", value, f": extra text: {go_quote(value)}")
    year, month, day = fields["year"], fields["month"], fields["day"]
    if day < 1 or day > _days_in(year, month):
        raise _TimeError(raw, "", value, ": day out of range")
    try:
        moment = datetime(max(year, 1), month, day, tzinfo=UTC)
    except ValueError:  # year 0, which Go holds and datetime does not: before any recording
        return datetime.min.replace(tzinfo=UTC)
    seconds = fields["hour"] * 3600 + fields["minute"] * 60 + fields["second"] - offset
    try:
        return moment + timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if seconds > 0 else datetime.min.replace(tzinfo=UTC)


def _days_in(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _go_parse_float(raw: str) -> float | None:
    """Go's strconv.ParseFloat(raw, 64); None where it reports an error (out of range too)."""
    if _GO_SPECIAL.fullmatch(raw):
        return float(raw.lower().replace("infinity", "inf"))
    if _GO_FLOAT.fullmatch(raw) and "_" not in raw:
        value = float(raw)
    elif _GO_HEX_FLOAT.fullmatch(raw):
        mantissa_text = raw.replace("_", "")
        try:
            value = float.fromhex(mantissa_text)
        except (OverflowError, ValueError):
            return None
    else:
        return None
    return None if math.isinf(value) else value


def _go_parse_duration(raw: str) -> int:
    """Go's time.ParseDuration(raw) in nanoseconds; BadRequest with Go's text if invalid."""
    invalid = BadRequest(f"invalid duration: time: invalid duration {go_quote(raw)}")
    text = raw
    negative = False
    if text[:1] in ("-", "+"):
        negative, text = text[0] == "-", text[1:]
    if text == "0":
        return 0
    if text == "":
        raise invalid
    total = 0
    while text:
        if not (text[0] == "." or "0" <= text[0] <= "9"):
            raise invalid
        match = re.match(r"(\d*)(\.(\d*))?", text)
        assert match is not None
        whole, fraction = match.group(1), match.group(3) or ""
        if whole == "" and fraction == "":
            raise invalid
        text = text[match.end() :]
        unit_match = re.match(r"[^.0-9]*", text)
        assert unit_match is not None
        unit = unit_match.group(0)
        if unit == "":
            raise BadRequest(f"invalid duration: time: missing unit in duration {go_quote(raw)}")
        text = text[len(unit) :]
        if unit not in _UNITS_NS:
            raise BadRequest(
                f"invalid duration: time: unknown unit {go_quote(unit)} in duration {go_quote(raw)}"
            )
        scale = _UNITS_NS[unit]
        number = int(whole or "0")
        if number > _MAX_NS or number * scale > _MAX_NS:
            raise invalid
        part = number * scale
        if fraction:
            part += int(float(int(fraction[:18])) * (scale / 10 ** len(fraction[:18])))
        total += part
        if total > _MAX_NS:
            raise invalid
    if not negative and total > _MAX_NS - 1:
        raise invalid
    return -total if negative else total


def parse_playback_duration(raw: str) -> float | None:
    """Seconds as MediaMTX's parseDuration reads `raw`; None if it refuses it."""
    try:
        return _duration_seconds(raw)
    except BadRequest:
        return None


def _duration_seconds(raw: str) -> float:
    seconds = _go_parse_float(raw)
    if seconds is not None:
        if math.isnan(seconds) or abs(seconds) * 1e9 >= _MAX_NS:
            # Go converts such a float to the most negative Duration on amd64.
            return -_MAX_NS / 1e9
        return math.trunc(seconds * 1e9) / 1e9
    return _go_parse_duration(raw) / 1e9


def format_seconds(seconds: float) -> str:
    """Seconds as Go's FormatFloat(v, 'f', -1, 64) writes them."""
    text = repr(round(seconds, 6))
    if "e" in text or "E" in text:
        text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text[:-2] if text.endswith(".0") else text


def json_seconds(seconds: float) -> float | int:
    """Seconds for JSON: an integer when whole, as Go's encoder writes a float64."""
    value = round(seconds, 6)
    return int(value) if value.is_integer() else value


def path_name_error(name: str) -> str | None:
    """Why `name` is not a valid path name (MediaMTX's conf.IsValidPathName), or None."""
    if name == "":
        return "cannot be empty"
    if name.startswith("/"):
        return "can't begin with a slash"
    if name.endswith("/"):
        return "can't end with a slash"
    if not _PATH_RE.match(name):
        return "can contain only alphanumeric characters, underscore, dot, minus, slash"
    if any(part in (".", "..") for part in name.split("/")):
        return "can't contain dot path segments"
    return None


def path_param(query: MultiMapping[str]) -> str:
    """`path`: a valid path name."""
    path = query.get("path", "")
    problem = path_name_error(path)
    if problem is not None:
        raise BadRequest(f"invalid path name: {problem} ({path})")
    return path


def time_param(query: MultiMapping[str], name: str, *, required: bool) -> datetime | None:
    """`start` or `end`: RFC 3339 as Go's time.Parse reads it."""
    raw = query.get(name, "")
    if raw == "" and not required:
        return None
    try:
        return parse_go_rfc3339(raw)
    except _TimeError as exc:
        raise BadRequest(f"invalid {name}: {exc}") from None


def duration_param(query: MultiMapping[str]) -> float:
    """`duration` in seconds, as MediaMTX reads it (0 or less is allowed here: nothing to serve).

    Longer than MAX_DURATION is refused with 400: the one bound MediaMTX does not have.
    """
    seconds = _duration_seconds(query.get("duration", ""))
    if seconds > MAX_DURATION:
        raise BadRequest(f"invalid duration: must be at most {MAX_DURATION:.0f} seconds")
    return seconds


def format_param(query: MultiMapping[str]) -> str:
    """`format`: fmp4 (the default) or mp4."""
    fmt = query.get("format", "")
    if fmt not in ("", "fmp4", "mp4"):
        raise BadRequest(f"invalid format: {fmt}")
    return fmt or "fmp4"
