"""Handlers of the browser pages: login, logout, the history and its live status."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from vms import appkeys, urls
from vms.api.files import presigned_redirect, stored_object
from vms.archive.files import content_disposition, poster_name
from vms.archive.manifest import MEDIA_TYPE
from vms.auth import Principal
from vms.dates import format_stamp, parse_stamp, utcnow
from vms.foreground import yield_to_api
from vms.models import Download, Status
from vms.pagination import Page
from vms.sessions import CREDENTIALS_MESSAGE, InvalidCredentials, Throttled
from vms.store import Cursor
from vms.web.forms import default_range, forget_note, read_note
from vms.web.history import (
    FILTER_LABELS,
    PER_PAGE,
    Filters,
    describe,
    parse_filters,
    parse_ids,
    user_options,
)
from vms.web.rendering import Turns, render_sliced
from vms.web.session import (
    CSRF_FIELD,
    WEB_CLIENT,
    CookieState,
    browser_state,
    csrf_ok,
    csrf_token,
    current_principal,
    decode_state,
    logged_in,
    logged_out,
    set_state,
)

log = logging.getLogger(__name__)

HISTORY = "/history"
_EXPIRED_FORM = "This form has expired. Please try again."
_NEXT = re.compile(r"/history(?:[/?][\x21-\x7e]*)?")


def safe_next(value: object) -> str:
    """Where to go after login: a page of ours under /history, never another site."""
    if isinstance(value, str) and len(value) <= 2000 and _NEXT.fullmatch(value):
        return value
    return HISTORY


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    state: CookieState,
    *,
    user: Principal | None = None,
    status: int = 200,
    write_cookie: bool = False,
) -> web.Response:
    """A page with the CSRF token and the signed-in user in its context."""
    full = _page_context(request, context, state, user)
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    if write_cookie:
        set_state(request, response, state)
    return response


def _page_context(
    request: web.Request,
    context: Mapping[str, Any],
    state: CookieState,
    user: Principal | None,
) -> dict[str, Any]:
    return {
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_token(request, state),
        "user": user.user if user else None,
        "tz_name": request.config_dict[appkeys.CONFIG].timezone,
        **context,
    }


async def home(request: web.Request) -> web.StreamResponse:
    """GET /: the history is the only page there is."""
    return _redirect(HISTORY)


async def login_form(request: web.Request) -> web.StreamResponse:
    """GET /login: the form, or straight on to the history for a signed-in browser."""
    state, fresh = browser_state(request)
    next_url = safe_next(request.query.get("next"))
    if await current_principal(request, state) is not None:
        return _redirect(next_url)
    return render(request, "login.html", {"next": next_url, "login": ""}, state, write_cookie=fresh)


async def login_submit(request: web.Request) -> web.StreamResponse:
    """POST /login: check the CSRF token and credentials, open a web device session."""
    state = decode_state(request)
    form = await request.post()
    next_url = safe_next(form.get("next"))
    login = form.get("login")
    login = login.strip() if isinstance(login, str) else ""
    password = form.get("password")
    context: dict[str, Any] = {"next": next_url, "login": login[:255]}

    def again(message: str, status: int, current: CookieState, **headers: str) -> web.Response:
        response = render(
            request,
            "login.html",
            {**context, "error": message},
            current,
            status=status,
            write_cookie=True,
        )
        response.headers.update(headers)
        return response

    if state is None or not csrf_ok(request, state, form.get(CSRF_FIELD)):
        return again(_EXPIRED_FORM, 403, state or CookieState.fresh())
    if not login or not isinstance(password, str) or not password:
        return again("Enter your login and password.", 422, state)
    if len(login) > 255 or len(password) > 1024:
        return again(CREDENTIALS_MESSAGE, 422, state)
    sessions = request.config_dict[appkeys.SESSIONS]
    previous = await current_principal(request, state)
    try:
        issued = await sessions.log_in(
            login,
            password,
            address=request.remote or "unknown",
            device=state.device,
            client=WEB_CLIENT,
        )
    except Throttled as exc:
        message = f"Too many attempts. Try again in {exc.retry_after} seconds."
        return again(message, 429, state, **{"Retry-After": str(exc.retry_after)})
    except InvalidCredentials:
        return again(CREDENTIALS_MESSAGE, 422, state)
    if previous is not None:  # signing in again replaces this browser's session
        await sessions.end(previous.user, previous.session.id)
    log.info("user %d signed in on the web", issued.principal.user.id)
    response = _redirect(next_url)
    set_state(request, response, logged_in(state, issued.principal.session.id))
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /logout: end the web session (and its sockets) and forget it in the cookie."""
    state = decode_state(request)
    form = await request.post()
    if state is None or not csrf_ok(request, state, form.get(CSRF_FIELD)):
        raise web.HTTPForbidden(reason="The form has expired")
    principal = await current_principal(request, state)
    if principal is not None:
        await request.config_dict[appkeys.SESSIONS].end(principal.user, principal.session.id)
    response = _redirect(request.config_dict[appkeys.URLS].path(urls.LOGIN))
    set_state(request, response, logged_out(state))
    return response


async def _signed_in(request: web.Request) -> tuple[CookieState, Principal] | None:
    state = decode_state(request)
    principal = await current_principal(request, state)
    if state is None or principal is None:
        return None
    return state, principal


async def history(request: web.Request) -> web.StreamResponse:
    """GET /history: history records and server-side archives, filtered and paginated."""
    links = request.config_dict[appkeys.URLS]
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _redirect(links.path(urls.LOGIN, {"next": request.path_qs}))
    state, principal = signed_in
    path = links.path(urls.HISTORY)
    response = await history_page(request, state, principal, note=read_note(request))
    forget_note(request, response, path)
    return response


async def history_page(
    request: web.Request,
    state: CookieState,
    principal: Principal,
    *,
    query: Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
    errors: Mapping[str, list[str]] | None = None,
    note: str | None = None,
    problem: str | None = None,
    status: int = 200,
) -> web.Response:
    """The history page; the request form refilled with `form` and its `errors` if given."""
    app = request.config_dict
    db, resources, config = app[appkeys.DB], app[appkeys.RESOURCES], app[appkeys.CONFIG]
    user = principal.user
    filters = parse_filters(request.query if query is None else query, operator=user.is_admin)
    now = utcnow()
    # The page's own steps between its queries count against its slices too, so the rows
    # and the drawing after them give the loop a turn as soon as one is used up.
    turns = Turns(request)
    downloads, total = await _list(request, principal, filters, PER_PAGE)
    await yield_to_api(request)
    rows = []
    for download in downloads:
        rows.append(describe(download, resources, now))
        if turns.due():
            await turns.take()
    visible = await db.visible_cameras(user)
    cameras = list(visible)
    if filters.camera_id is not None and all(c.id != filters.camera_id for c in cameras):
        chosen = await db.camera(filters.camera_id)
        cameras += [chosen] if chosen is not None else []
    path = app[appkeys.URLS].path(urls.HISTORY)
    page = Page(filters.page, total, PER_PAGE)
    # The pages beside this one start from its edge rows, so walking the history costs a page
    # per step however deep it goes (page 1 needs no cursor).
    page_links = {}
    if rows and page.next:
        page_links[page.next] = filters.url(path, page.next, older_than=rows[-1].id)
    if rows and page.previous and page.previous > 1:
        page_links[page.previous] = filters.url(path, page.previous, newer_than=rows[0].id)
    context = {
        "rows": rows,
        "filters": filters,
        "page": page,
        "page_links": page_links,
        "cameras": cameras,
        "request_cameras": visible,
        "user_options": (
            user_options(await db.user_choices(), filters.user_id) if user.is_admin else ""
        ),
        "statuses": FILTER_LABELS,
        "since": format_stamp(now),
        "path": path,
        "back": filters.url(path, filters.page),
        "form": form or default_range(now, config.tz),
        "errors": errors or {},
        "note": note,
        "problem": problem,
    }
    full = _page_context(request, context, state, principal)
    return await render_sliced(request, "history.html", full, status=status, turns=turns)


async def _list(
    request: web.Request,
    principal: Principal,
    filters: Filters,
    limit: int,
    since: datetime | None = None,
) -> tuple[list[Download], int]:
    """The downloads this user may see under `filters`: operators everyone's, users their own."""
    app = request.config_dict
    user = principal.user
    db = app[appkeys.DB]
    created_from, created_to = filters.created_range(app[appkeys.CONFIG].tz)
    if since is not None:
        created_from = max(created_from, since) if created_from else since
    cursor = None
    edge_id = filters.older_than or filters.newer_than
    edge = await db.download(edge_id) if edge_id is not None and since is None else None
    if edge is not None and (user.is_admin or edge.user_id == user.id):
        cursor = Cursor(edge.created_at, edge.id, newer=filters.newer_than is not None)
    return await db.list_downloads(
        user_id=filters.user_id if user.is_admin else user.id,
        kinds=filters.kinds,
        created_from=created_from,
        created_to=created_to,
        camera_id=filters.camera_id,
        status=filters.status,
        limit=limit,
        offset=(filters.page - 1) * limit,
        cursor=cursor,
    )


async def history_status(request: web.Request) -> web.StreamResponse:
    """GET /history/status?ids=1,2&since=STAMP: visible rows' live fields, and the new rows.

    Each row comes with its HTML, so the page's script can swap a row whose actions changed
    and insert new ones at the top without a reload. `since` moves on to the newest row sent.
    """
    signed_in = await _signed_in(request)
    if signed_in is None:
        return web.json_response({"message": "Unauthenticated."}, status=401)
    state, principal = signed_in
    app = request.config_dict
    user = principal.user
    resources = app[appkeys.RESOURCES]
    now = utcnow()
    filters = parse_filters(request.query, operator=user.is_admin)
    back = filters.url(app[appkeys.URLS].path(urls.HISTORY), filters.page)
    downloads = await app[appkeys.DB].downloads_by_ids(parse_ids(request.query.get("ids", "")))
    shown = [
        describe(download, resources, now)
        for download in downloads
        if user.is_admin or download.user_id == user.id
    ]
    rows = [
        {**row.live(), "html": _items_html(request, state, principal, [row], back)} for row in shown
    ]
    newer, added, latest = 0, [], request.query.get("since", "")
    since = _stamp(latest)
    if since is not None:
        first = parse_filters({**request.query, "page": "1"}, operator=user.is_admin)
        # Strictly after the page was drawn: created_at is stored to the microsecond.
        fresh, newer = await _list(
            request, principal, first, PER_PAGE, since=since + timedelta(microseconds=1)
        )
        if fresh:
            latest = format_stamp(fresh[0].created_at)
        for download in fresh:
            row = describe(download, resources, now)
            added.append(
                {"id": row.id, "html": _items_html(request, state, principal, [row], back)}
            )
    return web.json_response(
        {"data": rows, "newer": newer, "added": added, "since": latest},
        headers={"Cache-Control": "private, no-store"},
    )


def _items_html(
    request: web.Request, state: CookieState, principal: Principal, rows: list[Any], back: str
) -> str:
    """The table body of `rows`, as the page draws it."""
    context = {
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_token(request, state),
        "user": principal.user,
        "tz_name": request.config_dict[appkeys.CONFIG].timezone,
        "rows": rows,
        "back": back,
    }
    return aiohttp_jinja2.render_string("_items.html", request, context).strip()


def _stamp(text: str) -> datetime | None:
    if len(text) > 40:
        return None
    try:
        return parse_stamp(text)
    except ValueError:
        return None


async def _ready_archive(request: web.Request) -> Download:
    """The signed-in user's (or, for an operator, anyone's) ready archive named in the path."""
    signed_in = await _signed_in(request)
    if signed_in is None:
        raise web.HTTPNotFound()
    user = signed_in[1].user
    # The route takes 1 to 12 ASCII digits only.
    download = await request.config_dict[appkeys.DB].download(int(request.match_info["id"]))
    if download is None or not (user.is_admin or download.user_id == user.id):
        raise web.HTTPNotFound()
    if request.config_dict[appkeys.RESOURCES].facts(download).status != Status.READY:
        raise web.HTTPNotFound()
    return download


async def poster(request: web.Request) -> web.StreamResponse:
    """GET /history/downloads/{id}/poster: the player's poster frame of a ready archive."""
    download = await _ready_archive(request)
    resources = request.config_dict[appkeys.RESOURCES]
    if not resources.has_poster(download):
        raise web.HTTPNotFound()
    files = request.config_dict[appkeys.FILES]
    if files.bucket is not None:  # served like the archive: a presigned GET or streamed
        headers = {"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=3600"}
        if request.config_dict[appkeys.CONFIG].storage_proxy:
            return await stored_object(request, files, download.id,
                                       poster_name(download.id), headers, None)  # fmt: skip
        return await presigned_redirect(
            files.bucket, poster_name(download.id), headers, download.expires_at
        )
    return web.FileResponse(
        resources.poster_path(download),
        headers={"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=3600"},
    )


async def manifest(request: web.Request) -> web.Response:
    """GET /history/downloads/{id}/manifest: the signed manifest, saved beside the file."""
    download = await _ready_archive(request)
    token = await request.config_dict[appkeys.DB].manifest(download.id)
    if token is None:
        raise web.HTTPNotFound()
    name = request.config_dict[appkeys.RESOURCES].name(download) + ".jws"
    return web.Response(
        text=token,
        content_type=MEDIA_TYPE,
        headers={
            "Content-Disposition": content_disposition(name),
            "Cache-Control": "private, no-store",
        },
    )
