"""The playback API's query parameters, read as MediaMTX reads them, with its error texts."""

from __future__ import annotations

import math
import re
from datetime import datetime

from multidict import MultiMapping

from vms.dates import parse_rfc3339
from vms.mediaserver.recordings import path_name_error

# Longest /get served: an mp4's index grows with its length, so the length is bounded.
MAX_DURATION = 24 * 3600.0

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_GO_DURATION = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+\Z")
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """A parameter is wrong; the message is MediaMTX's error text."""


def parse_playback_duration(raw: str) -> float | None:
    """Seconds from a float (MediaMTX's form) or a Go duration such as `1h30m`; None if invalid."""
    if not raw.isascii():
        return None
    if _FLOAT.match(raw):
        return float(raw)
    if _GO_DURATION.match(raw):
        seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(raw))
        return -seconds if raw.startswith("-") else seconds
    return None


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


def path_param(query: MultiMapping[str]) -> str:
    """`path`: a valid path name."""
    path = query.get("path", "")
    problem = path_name_error(path)
    if problem is not None:
        raise BadRequest(f"invalid path name: {problem} ({path[:200]})")
    return path


def time_param(query: MultiMapping[str], name: str, *, required: bool) -> datetime | None:
    """`start` or `end`: RFC 3339 as Go reads it."""
    raw = query.get(name, "")
    if raw == "" and not required:
        return None
    parsed = parse_rfc3339(raw, exact_case=True)
    if parsed is None:
        raise BadRequest(f"invalid {name}: not an RFC 3339 time")
    return parsed


def duration_param(query: MultiMapping[str]) -> float:
    """`duration`: seconds above 0, at most MAX_DURATION."""
    seconds = parse_playback_duration(query.get("duration", ""))
    if seconds is None:
        raise BadRequest("invalid duration: not a number of seconds")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DURATION:
        raise BadRequest(f"invalid duration: must be above 0 and at most {MAX_DURATION:.0f}")
    return seconds


def format_param(query: MultiMapping[str]) -> str:
    """`format`: fmp4 (the default) or mp4."""
    fmt = query.get("format", "")
    if fmt not in ("", "fmp4", "mp4"):
        raise BadRequest(f"invalid format: {fmt[:50]}")
    return fmt or "fmp4"
