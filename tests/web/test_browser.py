"""The history page in headless Chromium: login, find, filter, live status, download, logout."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.chromium import ARGS, CHROMIUM, MARKS
from tests.support.pages import SlowMedia, add_downloads, archives_of, thick_link
from tests.support.service import PASSWORD, Client, Footage, bearer, login, rfc3339
from vms import appkeys
from vms.models import Kind, Status
from vms.resources import download_name

pw = pytest.importorskip("playwright.async_api")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

pytestmark = MARKS


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright, headless."""
    async with pw.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        await browser.close()


class Watch:
    """Console errors and script exceptions of a page (a CSP violation shows up as one)."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)

        page.on("pageerror", lambda e: self.problems.append(str(e)))

    def _console(self, message: Any) -> None:
        # A 404 or 422 page is the point of some steps; the browser logs each as an error.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)


async def sign_in(page: Any, base: str, user: str) -> None:
    """Fill in the login form as a person would."""
    await page.goto(f"{base}/login")
    await page.get_by_label("Login").fill(user)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await pw.expect(page).to_have_url(re.compile(r"/history"))


async def shoot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_find_filter_watch_download_and_log_out(
    service: Client, slow_media: SlowMedia, footage: Footage, chromium: Any
) -> None:
    """A person finds a record, filters, sees an archive become ready live, downloads it, leaves."""
    base = str(service.make_url("")).rstrip("/")
    await thick_link(service, footage, "alice", (0, 1))
    record = download_name("Gate", footage.start, footage.start + timedelta(minutes=1), UTC)
    context = await chromium.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    watch = Watch(page)

    await page.goto(f"{base}/history")
    await pw.expect(page).to_have_url(re.compile(r"/login\?next="))
    await sign_in(page, base, "alice")
    await pw.expect(page.locator("tr", has_text=record)).to_have_count(1)

    await page.get_by_role("search").get_by_label("Camera").select_option(label="Gate")
    await page.get_by_role("search").get_by_label("Status").select_option(label="Thick-client link")
    await page.get_by_role("button", name="Apply").click()
    await pw.expect(page).to_have_url(re.compile(r"camera=1&status=link"))
    await pw.expect(page.locator("tr[data-id]")).to_have_count(1)
    await page.get_by_role("link", name="Clear", exact=True).click()
    await page.get_by_role("search").get_by_label("Camera").select_option(label="Gate")
    await page.get_by_role("button", name="Apply").click()
    await pw.expect(page).to_have_url(re.compile(r"camera=1"))

    # A phone of Alice's asks the server for an archive; the row appears without a reload.
    await page.evaluate("window.sameDocument = true")
    answer = await login(service, "alice", device="phone-1", x_client="web")
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={
            "from": rfc3339(footage.start + timedelta(minutes=2)),
            "to": rfc3339(footage.start + timedelta(minutes=4)),
        },
        headers=bearer(answer, "phone-1", "web"),
    )
    assert response.status == 202
    download_id = (await response.json())["download"]["id"]
    await asyncio.wait_for(slow_media.holding.wait(), 20)
    row = page.locator(f'tr[data-id="{download_id}"]')
    await pw.expect(row.locator(".badge")).to_have_text("In progress", timeout=15_000)
    await pw.expect(row.locator("progress")).to_be_visible()
    await shoot(page, "history-in-progress-desktop")

    slow_media.gate.set()
    await pw.expect(row.locator(".badge")).to_have_text("Ready", timeout=20_000)
    assert await page.evaluate("window.sameDocument === true"), "the page was reloaded"
    await pw.expect(row.locator("progress")).to_have_count(0)
    await pw.expect(row).to_contain_text("left")
    await shoot(page, "history-ready-desktop")

    async with page.expect_download() as info:
        await row.get_by_role("link", name="Download").click()
    download = await info.value
    body = await asyncio.to_thread(Path(await download.path()).read_bytes)
    on_disk = await asyncio.to_thread(service.app[appkeys.FILES].path(download_id).read_bytes)
    assert body == on_disk and body[4:8] == b"ftyp"
    assert download.suggested_filename.startswith("Gate, ")

    await page.get_by_role("button", name="Log out").click()
    await pw.expect(page).to_have_url(re.compile(r"/login$"))
    await page.goto(f"{base}/history")
    await pw.expect(page).to_have_url(re.compile(r"/login\?next="))
    assert watch.problems == []
    await context.close()


async def _variety(service: Client) -> None:
    """Downloads in every state for the screenshots, some with files on disk."""
    users = {u.login: u.id for u in await service.app[appkeys.DB].users()}
    db, files = service.app[appkeys.DB], service.app[appkeys.FILES]
    now = datetime.now(UTC)
    start = now - timedelta(hours=2)
    await add_downloads(service, users["bob"], 2, 2, start=start - timedelta(days=1))
    await add_downloads(service, users["alice"], 1, 3, start=start)
    archives = await add_downloads(
        service, users["alice"], 1, 5, kind=Kind.ARCHIVE, status=Status.QUEUED, start=start
    )
    states: list[dict[str, Any]] = [
        {"status": Status.READY, "progress": 100, "expires_at": now + timedelta(minutes=170)},
        {"status": Status.RUNNING, "progress": 42},
        {"status": Status.FAILED, "message": "The media server could not be reached."},
        {"status": Status.EXPIRED},
        {"status": Status.READY, "progress": 100, "expires_at": now + timedelta(minutes=35)},
    ]
    for download, fields in zip(archives, states, strict=True):
        await db.update_download(download.id, now, **fields)
        if fields["status"] == Status.READY:
            files.root.mkdir(parents=True, exist_ok=True)
            files.path(download.id).write_bytes(b"\0\0\0\x18ftypisom")


async def _open(chromium: Any, viewport: dict[str, int], **options: Any) -> tuple[Any, Any, Watch]:
    """A fresh browser context (its own cookies) and page, watched for script errors."""
    context = await chromium.new_context(viewport=viewport, **options)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    return context, page, Watch(page)


@pytest.mark.parametrize(("width", "viewport"), [("phone", PHONE), ("desktop", DESKTOP)])
async def test_pages_look_right(
    service: Client, chromium: Any, width: str, viewport: dict[str, int]
) -> None:
    """Login, history, empty state and 404 render without script or CSP errors; screenshots."""
    base = str(service.make_url("")).rstrip("/")
    problems: list[str] = []

    context, page, watch = await _open(chromium, viewport)
    await sign_in(page, base, "bob")
    await pw.expect(page.get_by_text("No downloads yet")).to_be_visible()
    await shoot(page, f"history-empty-{width}")
    await _variety(service)
    await page.goto(f"{base}/history?camera=2&status=queued")
    await page.get_by_role("link", name="Clear", exact=True).click()
    await pw.expect(page.locator("tr[data-id]")).to_have_count(2)
    await context.close()
    problems += watch.problems

    context, page, watch = await _open(chromium, viewport)
    await page.goto(f"{base}/login")
    await shoot(page, f"login-{width}")
    await page.get_by_label("Login").fill("admin")
    await page.get_by_label("Password").fill("wrong")
    await page.get_by_role("button", name="Sign in").click()
    await pw.expect(page.get_by_role("alert")).to_contain_text("do not match")
    await shoot(page, f"login-error-{width}")
    await sign_in(page, base, "admin")
    await pw.expect(page.locator("tr[data-id]")).to_have_count(10)
    await pw.expect(page.locator(".badge-failed")).to_have_text("Failed")
    await shoot(page, f"history-operator-{width}")
    await page.goto(f"{base}/history?status=failed&camera=2")
    await pw.expect(page.get_by_text("Nothing matches these filters")).to_be_visible()
    await shoot(page, f"history-no-match-{width}")
    await page.goto(f"{base}/nowhere")
    await pw.expect(page.get_by_text("Page not found")).to_be_visible()
    await shoot(page, f"error-404-{width}")
    await context.close()
    problems += watch.problems

    context, page, watch = await _open(chromium, viewport, color_scheme="dark")
    await sign_in(page, base, "alice")
    await shoot(page, f"history-user-dark-{width}")
    await context.close()
    problems += watch.problems
    assert problems == []


async def test_everything_works_with_javascript_off(service: Client, chromium: Any) -> None:
    """With scripts disabled a person can still sign in, list, filter, page and log out."""
    users = {u.login: u.id for u in await service.app[appkeys.DB].users()}
    await add_downloads(service, users["alice"], 1, 27)
    await add_downloads(service, users["bob"], 2, 2)
    base = str(service.make_url("")).rstrip("/")
    context, page, watch = await _open(chromium, DESKTOP, java_script_enabled=False)
    await sign_in(page, base, "admin")
    await pw.expect(page.locator("tr[data-id]")).to_have_count(25)
    await page.get_by_role("search").get_by_label("Camera").select_option(label="Gate")
    await page.get_by_role("button", name="Apply").click()
    await pw.expect(page).to_have_url(re.compile(r"camera=1"))
    await page.get_by_role("link", name="Older →").click()
    await pw.expect(page).to_have_url(re.compile(r"camera=1&page=2"))
    await pw.expect(page.locator("tr[data-id]")).to_have_count(2)
    await pw.expect(page.get_by_role("search").get_by_label("Camera")).to_have_value("1")
    await page.get_by_role("button", name="Log out").click()
    await pw.expect(page).to_have_url(re.compile(r"/login$"))
    await context.close()
    assert watch.problems == []


# The page's actions, at a phone's and a small laptop's width

WIDTHS = {
    "320": {"width": 320, "height": 640},
    "390": PHONE,
    "1024": {"width": 1024, "height": 768},
    "1280": DESKTOP,
}
SHOTS = Path("/tmp/vms-history-shots")


async def snap(page: Any, name: str) -> None:
    """A full-page screenshot in /tmp, to look at."""
    await asyncio.to_thread(SHOTS.mkdir, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def local_input(moment: datetime, zone: str) -> str:
    """A moment as a person in `zone` types it into a datetime-local field."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M:%S")


async def ask_in_page(page: Any, start: datetime, end: datetime, zone: str) -> None:
    """Fill in the request form in the browser's zone and send it."""
    form = page.locator("[data-ask]")
    await form.locator("input[name=from]").fill(local_input(start, zone))
    await form.locator("input[name=to]").fill(local_input(end, zone))
    await form.get_by_role("button", name="Ask for archive").click()
    await pw.expect(page.get_by_text("The archive was asked for.")).to_be_visible()


@pytest.mark.parametrize("width", ["390", "1024"])
async def test_ask_watch_it_get_ready_play_delete_and_ask_again(
    service: Client, footage: Footage, chromium: Any, width: str
) -> None:
    """A person asks for an archive, sees it become ready live, plays it, deletes it, asks again."""
    base = str(service.make_url("")).rstrip("/")
    zone = "Asia/Tokyo"
    context, page, watch = await _open(chromium, WIDTHS[width], timezone_id=zone)
    await sign_in(page, base, "alice")
    await pw.expect(page.get_by_text("No downloads yet")).to_be_visible()
    await pw.expect(page.locator("[data-tz-note]")).to_contain_text(zone)
    start = footage.start + timedelta(seconds=30)
    await ask_in_page(page, start, start + timedelta(minutes=2), zone)
    [download] = await archives_of(service, "alice")
    assert download.range_from == start  # typed in Tokyo, read as the same moment
    row = page.locator(f'tr[data-id="{download.id}"]')
    await page.evaluate("window.sameDocument = true")
    await pw.expect(row.locator(".badge")).to_have_text("Ready", timeout=20_000)
    assert await page.evaluate("window.sameDocument === true"), "the page was reloaded"
    await pw.expect(row).to_contain_text("Recorded 2 min")
    moment = row.locator("[data-range] time").first
    await pw.expect(moment).to_have_attribute("title", re.compile(r"Server time: .*\(UTC\)"))
    tokyo = start.astimezone(ZoneInfo(zone))
    await pw.expect(moment).to_contain_text(f"{tokyo:%M}")

    await row.get_by_role("link", name="Play").click()
    video = page.locator(f"#play-{download.id} video")
    await pw.expect(video).to_be_visible()
    await page.wait_for_function(
        "v => v.duration > 0 && !Number.isNaN(v.duration)", arg=await video.element_handle()
    )
    assert await video.evaluate("v => v.duration") > 100
    await snap(page, f"player-{width}")

    await row.get_by_text("Delete", exact=True).click()
    await snap(page, f"delete-confirm-{width}")
    await row.get_by_role("button", name="Yes, delete").click()
    await pw.expect(page.get_by_text("The archive's file was deleted.")).to_be_visible()
    await pw.expect(row.locator(".badge")).to_have_text("Expired")
    assert not service.app[appkeys.FILES].exists(download.id)

    await row.get_by_role("button", name=re.compile("^Ask again")).click()
    await pw.expect(page.get_by_text("asked for again")).to_be_visible()
    newest, _old = await archives_of(service, "alice")
    fresh = page.locator(f'tr[data-id="{newest.id}"]')
    await pw.expect(fresh.locator(".badge")).to_have_text("Ready", timeout=20_000)
    await snap(page, f"history-after-actions-{width}")
    await context.close()
    assert watch.problems == []


@pytest.mark.parametrize("width", ["390", "1024"])
async def test_cancel_a_running_archive(
    service: Client, footage: Footage, chromium: Any, slow_media: SlowMedia, width: str
) -> None:
    """An archive held mid-way by a slow media server is cancelled from the page."""
    base = str(service.make_url("")).rstrip("/")
    context, page, watch = await _open(chromium, WIDTHS[width])
    await sign_in(page, base, "alice")
    start = footage.start + timedelta(seconds=30)
    await ask_in_page(page, start, start + timedelta(minutes=2), "UTC")
    await asyncio.wait_for(slow_media.holding.wait(), 20)
    [download] = await archives_of(service, "alice")
    row = page.locator(f'tr[data-id="{download.id}"]')
    await pw.expect(row.locator(".badge")).to_have_text("In progress")
    await snap(page, f"in-progress-{width}")
    await row.get_by_role("button", name=re.compile("^Cancel")).click()
    await pw.expect(page.get_by_text("The archive was cancelled.")).to_be_visible()
    await pw.expect(row.locator(".badge")).to_have_text("Cancelled")
    await pw.expect(row.get_by_role("button", name=re.compile("^Ask again"))).to_be_visible()
    await context.close()
    assert watch.problems == []


@pytest.mark.parametrize("width", list(WIDTHS))
async def test_every_action_stays_in_view(service: Client, chromium: Any, width: str) -> None:
    """At 320 to 1280 px every row's buttons are inside the window and at least 44 px tall."""
    await _variety(service)
    base = str(service.make_url("")).rstrip("/")
    for user in ("admin", "alice"):
        context, page, watch = await _open(chromium, WIDTHS[width])
        await sign_in(page, base, user)
        await pw.expect(page.locator("tr[data-id]").first).to_be_visible()
        boxes = await page.evaluate(
            """() => Array.from(document.querySelectorAll(
                 'tr[data-id] .actions .btn, tr[data-id] .actions summary'))
               .map(b => { const r = b.getBoundingClientRect();
                           return [b.textContent.trim(), r.left, r.right, r.height]; })"""
        )
        assert len(boxes) >= 4
        inner = WIDTHS[width]["width"]
        for text, left, right, height in boxes:
            assert left >= 0 and right <= inner, (user, text, left, right)
            assert height >= 44, (user, text, height)
        assert await page.evaluate("document.documentElement.scrollWidth") <= inner
        await snap(page, f"history-{user}-{width}")
        await context.close()
        assert watch.problems == []
