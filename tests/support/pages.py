"""Helpers for page tests: a cookie-keeping browser stand-in, seeded downloads, a gated proxy."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from tests.support.service import PASSWORD, Client, Footage, bearer, login, rfc3339, sql_write
from vms import appkeys
from vms.models import PENDING, Download, Kind, Status

_CSRF = re.compile(r'name="_csrf" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


class Browser:
    """A separate cookie jar on the service, like one person's browser, without JavaScript."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """GET without following redirects."""
        return await self.session.get(self.base + path, allow_redirects=False, **kwargs)

    async def post(self, path: str, data: dict[str, str]) -> aiohttp.ClientResponse:
        """POST a form without following redirects."""
        return await self.session.post(self.base + path, data=data, allow_redirects=False)

    async def csrf(self, path: str = "/login") -> str:
        """Open a page and read its form token."""
        response = await self.get(path)
        return csrf_of(await response.text())

    async def login(self, user: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        """Fill in and send the login form."""
        token = await self.csrf()
        return await self.post("/login", {"login": user, "password": password, "_csrf": token})

    def cookie(self) -> str:
        """The value of the pages' session cookie in this browser."""
        return self.session.cookie_jar.filter_cookies(URL(self.base))["vms_web"].value

    async def page(self, path: str) -> str:
        """The HTML of a page that must answer 200."""
        response = await self.get(path)
        assert response.status == 200, (response.status, response.headers.get("Location"))
        return await response.text()


async def signed_in(browsers: Callable[[], Browser], user: str) -> Browser:
    """A browser where `user` has logged in."""
    browser = browsers()
    response = await browser.login(user)
    assert response.status == 303, await response.text()
    return browser


async def thick_link(client: Client, footage: Footage, user: str, minutes: tuple[int, int]) -> None:
    """Ask for a thick-client link through the API, which records it in the history."""
    answer = await login(client, user, device=f"{user}-pc")
    camera = 1 if user in ("alice", "admin") else 2
    response = await client.get(
        f"/api/v1/cameras/{camera}/archive/link",
        params={
            "from": rfc3339(footage.start + timedelta(minutes=minutes[0])),
            "to": rfc3339(footage.start + timedelta(minutes=minutes[1])),
        },
        headers=bearer(answer, f"{user}-pc"),
    )
    assert response.status == 200, await response.text()


SEEDED_ELSEWHERE = "seeded-elsewhere"


async def add_downloads(
    client: Client,
    user_id: int,
    camera_id: int,
    count: int,
    *,
    kind: str = Kind.LINK,
    status: str = Status.READY,
    start: datetime | None = None,
) -> list[Download]:
    """Store `count` downloads of one user straight in the real database, a minute apart."""
    app = client.app
    db = app[appkeys.DB]
    user = await db.user(user_id)
    camera = await db.camera(camera_id)
    assert user is not None and camera is not None
    issued = await app[appkeys.AUTH].issue(user, f"seed-{user_id}", "ios-cctv", datetime.now(UTC))
    begin = start or datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    # Seeded jobs stand for work another process of the site holds: a worker polling a shared
    # store would take them otherwise (and fail them, as nothing records them). So they are
    # made cancelled, held elsewhere, then moved to their status: never claimable meanwhile.
    pending = Status(status) in PENDING
    made = []
    for index in range(count):
        made.append(
            await db.create_download(
                kind=Kind(kind),
                user=user,
                session=issued.principal.session,
                camera=camera,
                range_from=begin + timedelta(minutes=index),
                range_to=begin + timedelta(minutes=index, seconds=30),
                status=Status.CANCELLED if pending else Status(status),
                now=begin + timedelta(minutes=index),
            )
        )
    if not pending:
        return made
    ids = ", ".join(str(d.id) for d in made)
    until = (datetime.now(UTC) + timedelta(days=1)).timestamp()
    # Only ids and a stamp this helper made go into the statement.
    hold = f"UPDATE downloads SET claimed_by = '{SEEDED_ELSEWHERE}', lease_until = {until}"  # noqa: S608
    await sql_write(db, f"{hold} WHERE id IN ({ids})")
    moved = []
    for download in made:
        now = download.created_at
        updated = await db.update_download(download.id, now, status=Status(status))
        assert updated is not None
        moved.append(updated)
    return moved


class SlowMedia:
    """A real HTTP proxy before the real media server that holds /get bodies at a gate."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    def app(self) -> web.Application:
        """The proxy's application."""
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.upstream + request.path_qs, headers=headers) as upstream,
        ):
            body = await upstream.read()
            status, content_type = upstream.status, upstream.content_type
        if request.path != "/get" or status != 200:
            return web.Response(body=body, status=status, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = len(body)
        await response.prepare(request)
        step = max(1, len(body) // 10)
        await response.write(body[:step])
        self.holding.set()
        await self.gate.wait()
        for offset in range(step, len(body), step):
            await response.write(body[offset : offset + step])
            await asyncio.sleep(0.25)
        await response.write_eof()
        return response


def form_time(moment: datetime) -> str:
    """A moment as the request form's `datetime-local` field sends it, in UTC (the server's)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def submit(
    browser: Browser, action: str, data: dict[str, str], page: str = "/history"
) -> aiohttp.ClientResponse:
    """Send one of the history page's forms with the page's CSRF token, as a click would."""
    token = await browser.csrf(page)
    return await browser.post(action, {"_csrf": token, **data})


async def wait_download(
    client: Client, download_id: int, wanted: set[str], timeout: float = 20.0
) -> Download:
    """Poll the real database until the download's status is one of `wanted`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        download = await client.app[appkeys.DB].download(download_id)
        assert download is not None
        if download.status in wanted:
            return download
        if loop.time() > deadline:
            raise AssertionError(f"download {download_id} stuck in {download.status!r}")
        await asyncio.sleep(0.02)


async def archives_of(client: Client, login_name: str) -> list[Download]:
    """The server-side archives of one user, newest first."""
    db = client.app[appkeys.DB]
    user = next(u for u in await db.users() if u.login == login_name)
    found, _total = await db.list_downloads(
        user_id=user.id, kinds=(Kind.ARCHIVE,), limit=100, offset=0
    )
    return found


def note_of(response: aiohttp.ClientResponse) -> str:
    """The key of the note an action left for the next page."""
    cookie = response.cookies.get("vms_note")
    return cookie.value if cookie is not None else ""
