"""The history page's forms: ask for an archive, cancel, delete, or ask again for one.

Each is a POST with the CSRF token that ends in a 303 back to the list (filters kept) and a
note, so the page works without JavaScript and a reload never repeats an action. A double
submit is harmless: asking twice for the same range returns the same archive, and cancelling
or deleting an archive that already ended changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from vms import appkeys, urls
from vms.archive.actions import DownloadNotFound, NotAllowed
from vms.archive.mediaclient import MediaUnavailable
from vms.archive.requests import CameraNotFound, NoRecording, NotEnoughDisk, TooManyPending
from vms.auth import Principal
from vms.dates import parse_date, utcnow
from vms.models import PENDING, Download, Kind, Status
from vms.validation import ValidationFailed
from vms.web.forms import NOTES, form_moment, leave_note, text_fields
from vms.web.history import AGAIN, describe
from vms.web.pages import history_page, render, safe_next
from vms.web.session import (
    CSRF_FIELD,
    WEB_CLIENT,
    CookieState,
    csrf_ok,
    current_principal,
    decode_state,
)

log = logging.getLogger(__name__)

NO_RECORDING = "There is no recording between these times. Choose another range."
NO_CAMERA = "Choose one of your cameras."
_FIELDS = ("camera", "from", "to", "offset")
# An operator's repeat of someone else's archive is checked and made under one lock, so a
# double submit makes one archive (ask has its own lock for the caller's own).
_REPEAT_LOCKS: weakref.WeakKeyDictionary[web.Application, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


class _Posted:
    """A checked form post: the browser's state, who is signed in, the form, where to go back."""

    def __init__(
        self, state: CookieState, principal: Principal, form: MultiDictProxy[Any], back: str
    ) -> None:
        self.state = state
        self.principal = principal
        self.form = form
        self.back = back


async def _posted(request: web.Request) -> _Posted:
    """The form if its CSRF token is this browser's (403 if not) and someone is signed in."""
    state = decode_state(request)
    form = await request.post()
    if state is None or not csrf_ok(request, state, form.get(CSRF_FIELD)):
        raise web.HTTPForbidden(reason="The form has expired")
    back = safe_next(form.get("back"))
    principal = await current_principal(request, state)
    if principal is None:
        login = request.config_dict[appkeys.URLS].path(urls.LOGIN, {"next": back})
        raise web.HTTPSeeOther(login)
    return _Posted(state, principal, form, back)


def _done(request: web.Request, posted: _Posted, note: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": posted.back})
    leave_note(response, note, request.config_dict[appkeys.URLS].path(urls.HISTORY))
    return response


async def _own_or_operators(request: web.Request, principal: Principal) -> Download:
    """The download named in the path if this user may see it; 404 otherwise (as the API)."""
    # The route takes 1 to 12 ASCII digits only.
    download = await request.config_dict[appkeys.DB].download(int(request.match_info["id"]))
    user = principal.user
    if download is None or not (user.is_admin or download.user_id == user.id):
        raise web.HTTPNotFound()
    if download.kind != Kind.ARCHIVE:
        raise web.HTTPForbidden(reason="A history record is kept")
    return download


def _status(request: web.Request, download: Download) -> Status:
    return request.config_dict[appkeys.RESOURCES].facts(download).status


async def request_archive(request: web.Request) -> web.StreamResponse:
    """POST /history/request: a new archive of one camera and range, made in the background."""
    posted = await _posted(request)
    app = request.config_dict
    principal = posted.principal
    values = text_fields(posted.form, _FIELDS)
    tz = app[appkeys.CONFIG].tz
    errors: dict[str, list[str]] = {}
    camera = None
    try:
        camera_id = int(values["camera"]) if values["camera"].isdigit() else None
        camera = await app[appkeys.REQUESTS].camera_for(principal, camera_id)
    except CameraNotFound:
        errors["camera"] = [NO_CAMERA]
    data: dict[str, Any] = {}
    try:
        data = app[appkeys.LINK_SCHEMA].validated(
            {
                "from": form_moment(values["from"], values["offset"], tz),
                "to": form_moment(values["to"], values["offset"], tz),
                "X-Client": WEB_CLIENT,
                "X-UUID": principal.session.device,
            }
        )
    except ValidationFailed as exc:
        errors.update(exc.errors)

    async def again(status: int, **extra: Any) -> web.Response:
        return await history_page(
            request,
            posted.state,
            principal,
            query=URL(posted.back).query,
            form=_refill(values, tz),
            status=status,
            **extra,
        )

    if errors or camera is None:
        return await again(422, errors=errors)
    try:
        asked = await app[appkeys.REQUESTS].ask(
            principal, camera, data["range_from"], data["range_to"], WEB_CLIENT
        )
    except NoRecording:
        return await again(422, errors={"from": [NO_RECORDING]})
    except TooManyPending:
        return await again(429, problem=NOTES["busy"])
    except NotEnoughDisk:
        return await again(507, problem=NOTES["disk"])
    except MediaUnavailable:
        return await again(502, problem=NOTES["media"])
    log.info("user %d asked for archive %d on the web", principal.user.id, asked.download.id)
    return _done(request, posted, "requested")


def _refill(values: Mapping[str, str], tz: Any) -> dict[str, str]:
    """The request form as sent, with each time's moment for the page's script."""
    refill = dict(values)
    for name in ("from", "to"):
        moment = parse_date(form_moment(values[name], values["offset"], tz), tz)
        refill[f"{name}_utc"] = moment.isoformat() if moment else ""
    return refill


async def cancel_archive(request: web.Request) -> web.StreamResponse:
    """POST /history/downloads/{id}/cancel: stop a queued or running archive."""
    posted = await _posted(request)
    download = await _own_or_operators(request, posted.principal)
    status = _status(request, download)
    if status not in PENDING:
        # A second click, or it finished meanwhile: a ready file is not deleted by a cancel.
        return _done(request, posted, "finished" if status == Status.READY else "nothing")
    try:
        after = await request.config_dict[appkeys.ACTIONS].remove(
            posted.principal.user, download.id, cancel_only=True
        )
    except DownloadNotFound:
        raise web.HTTPNotFound() from None
    return _done(request, posted, "cancelled" if after.status == Status.CANCELLED else "nothing")


async def delete_archive(request: web.Request) -> web.StreamResponse:
    """POST /history/downloads/{id}/delete: delete a ready archive's file, once confirmed."""
    posted = await _posted(request)
    download = await _own_or_operators(request, posted.principal)
    status = _status(request, download)
    if status != Status.READY:
        return _done(request, posted, "gone" if status == Status.EXPIRED else "nothing")
    if posted.form.get("confirm") != "yes":
        row = describe(download, request.config_dict[appkeys.RESOURCES], utcnow())
        context = {"row": row, "back": posted.back}
        return render(request, "confirm.html", context, posted.state, user=posted.principal)
    try:
        await request.config_dict[appkeys.ACTIONS].remove(posted.principal.user, download.id)
    except DownloadNotFound:
        raise web.HTTPNotFound() from None
    return _done(request, posted, "deleted")


async def ask_again(request: web.Request) -> web.StreamResponse:
    """POST /history/downloads/{id}/again: the same camera and range once more.

    One's own archive is asked for again on this browser's session; an operator's repeat of
    someone else's is made for that user's device, as the admin API does.
    """
    posted = await _posted(request)
    app = request.config_dict
    principal = posted.principal
    download = await _own_or_operators(request, principal)
    if _status(request, download) not in AGAIN:
        return _done(request, posted, "nothing")
    try:
        if download.user_id == principal.user.id:
            camera = await app[appkeys.REQUESTS].camera_for(principal, download.camera_id)
            await app[appkeys.REQUESTS].ask(
                principal, camera, download.range_from, download.range_to, WEB_CLIENT
            )
        else:
            await _repeat(request, principal, download)
    except CameraNotFound:
        return _done(request, posted, "camera")
    except NoRecording:
        return _done(request, posted, "no-recording")
    except TooManyPending:
        return _done(request, posted, "busy")
    except NotEnoughDisk:
        return _done(request, posted, "disk")
    except MediaUnavailable:
        return _done(request, posted, "media")
    except DownloadNotFound:
        raise web.HTTPNotFound() from None
    except NotAllowed:
        raise web.HTTPForbidden() from None
    return _done(request, posted, "again")


async def _repeat(request: web.Request, principal: Principal, original: Download) -> None:
    app = request.config_dict
    async with _REPEAT_LOCKS.setdefault(request.app, asyncio.Lock()):
        made = await app[appkeys.DB].pending_archive(
            original.session_id, original.camera_id, original.range_from, original.range_to
        )
        if made is not None and (
            made.status != Status.READY or app[appkeys.RESOURCES].facts(made).file_exists
        ):
            return  # already asked for again: a double submit makes one archive
        await app[appkeys.ACTIONS].repeat(principal.user, original.id)
