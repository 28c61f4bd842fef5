"""What the history page's forms carry: the request form's range and the notes after an action."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo

from aiohttp import web

# How far back the request form reaches by default.
DEFAULT_SPAN = timedelta(minutes=5)
# `<input type=datetime-local step=1>` sends seconds, unless they are zero in some browsers.
_LOCAL = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(:\d{2})?\Z")
_OFFSET = re.compile(r"^-?\d{1,4}\Z")
_MAX_OFFSET = 18 * 60

NOTE_COOKIE = "vms_note"
# The notes an action can leave for the next page; the cookie carries only the key.
NOTES = {
    "requested": "The archive was asked for. It appears below and becomes ready by itself.",
    "again": "The archive was asked for again. It appears at the top of the list.",
    "cancelled": "The archive was cancelled.",
    "deleted": "The archive's file was deleted.",
    "finished": "That archive had already finished, so there was nothing to cancel.",
    "nothing": "That archive had already ended; nothing was changed.",
    "gone": "That archive has no file any more; nothing was deleted.",
    "no-recording": "There is no recording left in that range, so it cannot be made again.",
    "busy": "You already have as many archives in progress as you may. Try again later.",
    "media": "The camera's media server is unavailable. Try again in a moment.",
    "disk": "The server is short of disk space for new archives. Try again later.",
    "camera": "That camera is no longer available to you.",
}


def form_moment(text: str, offset: str, tz: tzinfo) -> str:
    """A `datetime-local` value as the range schema reads it.

    With the browser's offset (minutes east of UTC, set by the page's script) it becomes
    RFC 3339; without it, it is read in the server's zone. Unreadable text is passed on for
    the schema to refuse.
    """
    match = _LOCAL.match(text.strip())
    if match is None:
        return text
    day, minutes, seconds = match.group(1), match.group(2), match.group(3) or ":00"
    if _OFFSET.match(offset.strip()) and abs(int(offset)) <= _MAX_OFFSET:
        east = int(offset)
        sign = "-" if east < 0 else "+"
        hours, rest = divmod(abs(east), 60)
        return f"{day}T{minutes}{seconds}{sign}{hours:02d}:{rest:02d}"
    return f"{day} {minutes}{seconds}"


def input_value(moment: datetime, tz: tzinfo) -> str:
    """A moment as a `datetime-local` value in `tz`, to the second."""
    return moment.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")


def default_range(now: datetime, tz: tzinfo) -> dict[str, str]:
    """The request form's starting values: the last five minutes, whole seconds."""
    end = now.replace(microsecond=0)
    start = end - DEFAULT_SPAN
    return {
        "camera": "",
        "from": input_value(start, tz),
        "to": input_value(end, tz),
        "from_utc": start.isoformat(),
        "to_utc": end.isoformat(),
        "offset": "",
    }


def text_fields(form: Mapping[str, object], names: tuple[str, ...]) -> dict[str, str]:
    """The named fields of a posted form as strings ('' when missing or not text)."""
    values = {}
    for name in names:
        value = form.get(name)
        values[name] = value[:100] if isinstance(value, str) else ""
    return values


def leave_note(response: web.StreamResponse, key: str, path: str) -> None:
    """Have the next page under `path` say NOTES[key] once."""
    response.set_cookie(NOTE_COOKIE, key, max_age=60, path=path, httponly=True, samesite="Lax")


def read_note(request: web.Request) -> str | None:
    """The note an action left for this page, if any (forget it with `forget_note`)."""
    key = request.cookies.get(NOTE_COOKIE)
    return NOTES.get(key) if key else None


def forget_note(request: web.Request, response: web.StreamResponse, path: str) -> None:
    """Say the note only once."""
    if NOTE_COOKIE in request.cookies:
        response.del_cookie(NOTE_COOKIE, path=path)
