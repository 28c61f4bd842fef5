"""The login form, sessions, CSRF, access control and the history listing, without JavaScript."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from tests.support.pages import Browser, add_downloads, csrf_of, signed_in, thick_link
from tests.support.service import (
    PASSWORD,
    Client,
    Footage,
    Seeded,
    bearer,
    login,
    rfc3339,
    seed,
    sql_rows,
    wait_status,
)
from vms import appkeys
from vms.app import create_app
from vms.config import Config
from vms.models import Kind, Status
from vms.store import open_store
from vms.web.errors import page_errors
from vms.web.routes import setup_pages

Browsers = Callable[[], Browser]


def rows_of(page: str) -> list[str]:
    """The text of each table row of the history page, tags stripped."""
    bodies = re.findall(r'<tr data-id="\d+".*?</tr>', page, flags=re.S)
    return [html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", b))).strip() for b in bodies]


async def seeded(service: Client) -> Seeded:
    """The ids of alice, bob and admin."""
    users = {u.login: u.id for u in await service.app[appkeys.DB].users()}
    return Seeded(alice=users["alice"], bob=users["bob"], admin=users["admin"])


# Login, cookies, CSRF


async def test_login_form_has_fields_and_a_locked_down_cookie(browsers: Browsers) -> None:
    """GET /login shows login and password fields and sets an HttpOnly, Lax, non-Secure cookie."""
    response = await browsers().get("/login")
    assert response.status == 200
    page = await response.text()
    assert 'name="login"' in page and 'name="password"' in page and 'name="_csrf"' in page
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_cookie_is_secure_behind_an_https_public_url(
    config: Config, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    """With an https public URL the session cookie is marked Secure."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(config, public_url="https://vms.example.org"))
    )
    response = await client.get("/login")
    assert "Secure" in response.headers["Set-Cookie"]


async def test_login_opens_a_web_device_session(service: Client, browsers: Browsers) -> None:
    """A good login redirects to the history and records a `web` session for this browser."""
    browser = browsers()
    response = await browser.login("alice")
    assert response.status == 303
    assert response.headers["Location"] == "/history"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=86400" in cookie
    page = await browser.page("/history")
    assert "Alice" in page and "Log out" in page
    db = service.app[appkeys.DB]
    rows = await sql_rows(db, "SELECT client, device, ended_at FROM sessions")
    assert [(r[0], r[2]) for r in rows] == [("web", None)]
    assert rows[0][1].startswith("web-")


async def test_login_keeps_the_device_between_logins(service: Client, browsers: Browsers) -> None:
    """One browser keeps one device id across logins; a new login ends its previous session."""
    browser = await signed_in(browsers, "alice")
    token = csrf_of(await browser.page("/history"))
    assert (await browser.post("/logout", {"_csrf": token})).status == 303
    assert (await browser.login("alice")).status == 303
    token = csrf_of(await browser.page("/history"))  # again, while signed in
    again = {"login": "alice", "password": PASSWORD, "_csrf": token}
    assert (await browser.post("/login", again)).status == 303
    rows = await sql_rows(service.app[appkeys.DB], "SELECT device, ended_at FROM sessions")
    assert len({r[0] for r in rows}) == 1
    assert sorted(r[1] is None for r in rows) == [False, False, True]


@pytest.mark.parametrize(
    ("login_value", "password", "message"),
    [
        ("alice", "wrong password", "These credentials do not match our records."),
        ("nobody", PASSWORD, "These credentials do not match our records."),
        ("", PASSWORD, "Enter your login and password."),
        ("alice", "", "Enter your login and password."),
        ("a" * 300, PASSWORD, "These credentials do not match our records."),
    ],
)
async def test_bad_credentials_show_the_form_again(
    browsers: Browsers, login_value: str, password: str, message: str
) -> None:
    """Wrong or missing credentials re-render the form with a message and no session."""
    browser = browsers()
    token = await browser.csrf()
    response = await browser.post(
        "/login", {"login": login_value, "password": password, "_csrf": token}
    )
    assert response.status == 422
    assert message in await response.text()
    assert (await browser.get("/history")).status == 303


@pytest.mark.parametrize("token", ["", "0" * 64, "not-a-token", "from-another-browser"])
async def test_login_without_the_right_csrf_token_is_refused(
    browsers: Browsers, token: str
) -> None:
    """A login POST without this browser's CSRF token is refused with 403 and no session."""
    browser = browsers()
    await browser.csrf()
    if token == "from-another-browser":
        token = await browsers().csrf()
    response = await browser.post(
        "/login", {"login": "alice", "password": PASSWORD, "_csrf": token}
    )
    assert response.status == 403
    assert "This form has expired" in await response.text()
    assert (await browser.get("/history")).status == 303


async def test_login_without_a_cookie_is_refused(browsers: Browsers) -> None:
    """A cross-site POST carries no cookie: refused even with a token taken from a page."""
    token = await browsers().csrf()
    response = await browsers().post(
        "/login", {"login": "alice", "password": PASSWORD, "_csrf": token}
    )
    assert response.status == 403


async def test_logout_needs_csrf_and_ends_the_session(service: Client, browsers: Browsers) -> None:
    """Logout without the token is a 403 page; with it the session ends and the cookie is dead."""
    browser = await signed_in(browsers, "alice")
    stolen = browser.cookie()
    refused = await browser.post("/logout", {"_csrf": "0" * 64})
    assert refused.status == 403
    assert "Not allowed" in await refused.text()
    token = csrf_of(await browser.page("/history"))
    response = await browser.post("/logout", {"_csrf": token})
    assert response.status == 303 and response.headers["Location"] == "/login"
    assert (await browser.get("/history")).status == 303
    replay = browsers()
    replay.session.cookie_jar.update_cookies({"vms_web": stolen})
    assert (await replay.get("/history")).status == 303
    ended = await sql_rows(
        service.app[appkeys.DB], "SELECT ended_at FROM sessions WHERE client = 'web'"
    )
    assert ended and all(r[0] for r in ended)


async def test_a_tampered_cookie_is_not_a_session(browsers: Browsers) -> None:
    """Changing one character of the signed cookie logs the browser out."""
    browser = await signed_in(browsers, "alice")
    value = browser.cookie()
    forged = browsers()
    forged.session.cookie_jar.update_cookies(
        {"vms_web": value[:-1] + ("0" if value[-1] != "0" else "1")}
    )
    assert (await forged.get("/history")).status == 303


async def test_login_is_throttled_like_the_api(service: Client, browsers: Browsers) -> None:
    """After five failures the form answers 429 with Retry-After, and so does the API login."""
    browser = browsers()
    for _ in range(5):
        token = await browser.csrf()
        failed = await browser.post(
            "/login", {"login": "alice", "password": "nope", "_csrf": token}
        )
        assert failed.status == 422
    token = await browser.csrf()
    response = await browser.post(
        "/login", {"login": "alice", "password": PASSWORD, "_csrf": token}
    )
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many attempts" in await response.text()
    api = await service.post(
        "/api/v1/token",
        json={"login": "alice", "password": PASSWORD},
        headers={"X-Client": "web", "X-UUID": "x"},
    )
    assert api.status == 429


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/history",
        "/login",
        "/history\r\nX: y",
        "/history\n",
        "/api/v1/x",
    ],
)
async def test_login_never_redirects_off_the_history(browsers: Browsers, next_url: str) -> None:
    """`next` may only point at the history page; anything else goes to /history."""
    browser = browsers()
    token = await browser.csrf()
    response = await browser.post(
        "/login", {"login": "alice", "password": PASSWORD, "_csrf": token, "next": next_url}
    )
    assert response.headers["Location"] == "/history"


async def test_history_sends_a_stranger_to_login_and_back(browsers: Browsers) -> None:
    """Opening a filtered history signed out goes to /login, and back to that URL after it."""
    browser = browsers()
    response = await browser.get("/history?camera=1&status=ready")
    assert response.status == 303
    location = response.headers["Location"]
    assert location.startswith("/login?next=")
    page = await browser.page(location)
    token = csrf_of(page)
    assert 'value="/history?camera=1&amp;status=ready"' in page
    done = await browser.post(
        "/login",
        {
            "login": "alice",
            "password": PASSWORD,
            "_csrf": token,
            "next": "/history?camera=1&status=ready",
        },
    )
    assert done.headers["Location"] == "/history?camera=1&status=ready"


# Who sees what


async def test_users_see_their_own_rows_and_operators_see_everyone(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """Alice sees only her records, Bob only his; the operator sees both with who asked."""
    await thick_link(service, footage, "alice", (0, 1))
    await thick_link(service, footage, "bob", (1, 2))
    alice = rows_of(await (await signed_in(browsers, "alice")).page("/history"))
    bob = rows_of(await (await signed_in(browsers, "bob")).page("/history"))
    admin_page = await (await signed_in(browsers, "admin")).page("/history")
    admin = rows_of(admin_page)
    assert len(alice) == 1 and "Gate" in alice[0] and "Lobby" not in alice[0]
    assert len(bob) == 1 and "Lobby" in bob[0]
    assert len(admin) == 2
    assert "Requested by" in admin_page
    assert any("alice" in r for r in admin) and any("bob" in r for r in admin)


async def test_status_endpoint_hides_other_users_rows(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """/history/status answers only for rows the signed-in user may see."""
    seeded_ids = await seeded(service)
    [bobs] = await add_downloads(
        service, seeded_ids.bob, 2, 1, kind=Kind.ARCHIVE, status=Status.QUEUED
    )
    alice = await signed_in(browsers, "alice")
    response = await alice.get(f"/history/status?ids={bobs.id}")
    assert (await response.json())["data"] == []
    admin = await signed_in(browsers, "admin")
    body = await (await admin.get(f"/history/status?ids={bobs.id},x,{bobs.id + 99}")).json()
    assert [(d["id"], d["status"], d["label"]) for d in body["data"]] == [
        (bobs.id, "queued", "Queued")
    ]


async def test_status_endpoint_needs_a_session(browsers: Browsers) -> None:
    """Without a session /history/status is a JSON 401."""
    response = await browsers().get("/history/status?ids=1")
    assert response.status == 401
    assert await response.json() == {"message": "Unauthenticated."}


async def test_a_script_in_a_camera_name_is_shown_as_text(
    service: Client, browsers: Browsers
) -> None:
    """A camera named <script>alert(1)</script> renders escaped, in rows and filter options."""
    evil = "<script>alert(1)</script>"
    await service.app[appkeys.DB].put_camera(
        3, evil, "camera3", "http://127.0.0.1:9", datetime.now(UTC)
    )
    ids = await seeded(service)
    await add_downloads(service, ids.admin, 3, 1)
    page = await (await signed_in(browsers, "admin")).page("/history")
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # only the page's own script tag
    assert evil in rows_of(page)[0]


# Filters and pagination


async def test_filters_narrow_the_list_and_stay_in_the_url(
    service: Client, browsers: Browsers
) -> None:
    """Camera, user, status and date filters narrow the rows; the form shows them selected."""
    ids = await seeded(service)
    march = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    await add_downloads(service, ids.alice, 1, 2, start=march)
    await add_downloads(service, ids.bob, 2, 3, start=march + timedelta(days=2))
    await add_downloads(
        service, ids.bob, 2, 1, kind=Kind.ARCHIVE, status=Status.FAILED, start=march
    )
    admin = await signed_in(browsers, "admin")
    assert len(rows_of(await admin.page("/history"))) == 6
    page = await admin.page("/history?camera=2")
    assert len(rows_of(page)) == 4
    assert '<option value="2" selected>Lobby</option>' in page
    assert len(rows_of(await admin.page(f"/history?user={ids.alice}"))) == 2
    failed = await admin.page("/history?status=failed")
    assert len(rows_of(failed)) == 1 and "Failed" in rows_of(failed)[0]
    assert len(rows_of(await admin.page("/history?from=2026-03-03&to=2026-03-03"))) == 3
    assert len(rows_of(await admin.page("/history?to=2026-03-01"))) == 3
    empty = await admin.page("/history?camera=1&from=2026-03-02")
    assert rows_of(empty) == [] and "Nothing matches these filters" in empty


async def test_dates_are_read_in_the_configured_time_zone(
    config: Config,
    media_server: str,
    password_hash: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    """With Asia/Tokyo, a record made at 2026-03-01 20:00 UTC belongs to March 2 and shows 05:00."""
    tokyo = dataclasses.replace(config, timezone="Asia/Tokyo")
    db = await open_store(tokyo)
    ids = await seed(db, media_server, password_hash)
    await db.close()
    client = await aiohttp_client(create_app(tokyo))
    await add_downloads(client, ids.alice, 1, 1, start=datetime(2026, 3, 1, 20, 0, tzinfo=UTC))
    browser = Browser(client.session, str(client.make_url("")).rstrip("/"))
    assert (await browser.login("alice")).status == 303
    assert rows_of(await browser.page("/history?from=2026-03-01&to=2026-03-01")) == []
    [row] = rows_of(await browser.page("/history?from=2026-03-02"))
    assert "2 Mar 2026, 05:00" in row and "05:00:00 – 05:00:30" in row
    assert "Asia/Tokyo" in await browser.page("/history")


@pytest.mark.parametrize(
    ("query", "notice"),
    [
        ("camera=abc", "The camera filter was not understood"),
        ("status=bogus", "The status filter was not understood"),
        ("from=2026-13-45", "The from date must look like 2026-11-23"),
        ("from=2026-03-02&to=2026-03-01", "The end date is before the start date"),
    ],
)
async def test_bad_filters_are_ignored_with_a_note(
    browsers: Browsers, query: str, notice: str
) -> None:
    """A filter the page cannot read is dropped and the page says so."""
    page = await (await signed_in(browsers, "alice")).page(f"/history?{query}")
    assert notice in page


async def test_pagination_keeps_the_filters(service: Client, browsers: Browsers) -> None:
    """30 matching rows make two pages; the links carry the filters; page 3 says it is empty."""
    ids = await seeded(service)
    await add_downloads(service, ids.alice, 1, 30)
    await add_downloads(service, ids.bob, 2, 4)
    admin = await signed_in(browsers, "admin")
    first = await admin.page("/history?camera=1")
    assert len(rows_of(first)) == 25
    assert "1–25 of 30" in first
    assert 'href="/history?camera=1&amp;page=2&amp;before=' in first  # the filters and a cursor
    second = await admin.page("/history?camera=1&page=2")
    assert len(rows_of(second)) == 5
    assert "26–30 of 30" in second
    assert 'href="/history?camera=1"' in second  # back to page 1
    # Newest first: page 1 starts with the last one made.
    assert "09:29:00" in rows_of(first)[0] and "09:00:00" in rows_of(second)[-1]
    beyond = await admin.page("/history?camera=1&page=3")
    assert "No records on this page" in beyond


async def test_empty_history_says_what_to_do(browsers: Browsers) -> None:
    """A user with no downloads is told to ask for an archive on this very page."""
    page = await (await signed_in(browsers, "bob")).page("/history")
    assert "No downloads yet" in page
    assert "Ask for an archive" in page and "mobile app" not in page
    assert 'action="/history/request"' in page


async def test_the_list_works_without_javascript(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """A ready server-side archive is listed with a working download link in plain HTML."""
    answer = await login(service, "alice", device="phone-1", x_client="web")
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={
            "from": rfc3339(footage.start + timedelta(minutes=1)),
            "to": rfc3339(footage.start + timedelta(minutes=2)),
        },
        headers=bearer(answer, "phone-1", "web"),
    )
    assert response.status == 202
    download_id = (await response.json())["download"]["id"]
    await wait_status(service, answer, download_id, {"ready"})
    page = await (await signed_in(browsers, "alice")).page("/history")
    [row] = rows_of(page)
    assert "Ready" in row and "left" in row and "Download" in row
    href = html.unescape(re.search(r'href="([^"]+)" download', page).group(1))  # type: ignore[union-attr]
    assert f"/archive/download/{download_id}?expires=" in href
    file = await service.get(href[href.index("/archive/") :])
    assert file.status == 200 and file.headers["Content-Type"] == "video/mp4"
    assert (await file.read())[4:8] == b"ftyp"


async def test_status_endpoint_counts_new_rows(service: Client, browsers: Browsers) -> None:
    """Rows made after the page was drawn are counted as newer, filters applied."""
    ids = await seeded(service)
    admin = await signed_in(browsers, "admin")
    since = re.search(r'data-since="([^"]+)"', await admin.page("/history")).group(1)  # type: ignore[union-attr]
    now = datetime.now(UTC) + timedelta(seconds=1)
    await add_downloads(service, ids.alice, 1, 2, start=now)
    await add_downloads(service, ids.bob, 2, 1, start=now)
    body: dict[str, Any] = await (await admin.get(f"/history/status?since={since}")).json()
    assert body["newer"] == 3
    body = await (await admin.get(f"/history/status?since={since}&camera=2")).json()
    assert body["newer"] == 1
    alice = await signed_in(browsers, "bob")
    body = await (await alice.get(f"/history/status?since={since}")).json()
    assert body["newer"] == 1


# Error pages


@pytest.mark.parametrize(
    ("method", "path", "status", "title"),
    [
        ("GET", "/nowhere", 404, "Page not found"),
        ("GET", "/history/nowhere", 404, "Page not found"),
        ("GET", "/static/missing.css", 404, "Page not found"),
        ("GET", "/logout", 405, "Not allowed"),
    ],
)
async def test_error_pages_are_friendly_html(
    browsers: Browsers, method: str, path: str, status: int, title: str
) -> None:
    """Unknown pages and wrong methods get error.html with the strict CSP, no details."""
    response = await browsers().session.request(method, browsers().base + path)
    assert response.status == status
    page = await response.text()
    assert response.content_type == "text/html"
    assert title in page and "Traceback" not in page
    assert "Content-Security-Policy" in response.headers


async def test_api_errors_stay_json(browsers: Browsers) -> None:
    """The pages' middleware leaves /api alone: its 404 is still Laravel JSON."""
    response = await browsers().get("/api/v1/nowhere")
    assert response.status == 404
    assert await response.json() == {"message": "Not Found."}


async def test_a_failing_page_shows_500_without_details(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    """An exception in a page handler becomes the 500 page, never a stack trace."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    app = web.Application()
    setup_pages(app)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    response = await client.get("/broken")
    assert response.status == 500
    page = await response.text()
    assert "Something went wrong" in page
    assert "secret detail" not in page and "RuntimeError" not in page
    assert page_errors in app.middlewares


async def test_static_files_are_served(browsers: Browsers) -> None:
    """The stylesheet and script the pages link are served from /static/."""
    for name, kind in (("app.css", "text/css"), ("history.js", "text/javascript")):
        response = await browsers().get(f"/static/{name}")
        assert response.status == 200
        assert response.content_type in (kind, "application/javascript")
