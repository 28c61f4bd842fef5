"""The history page's actions without JavaScript: ask, cancel, delete, ask again; bad input."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.pages import (
    Browser,
    SlowMedia,
    add_downloads,
    archives_of,
    form_time,
    note_of,
    signed_in,
    submit,
    thick_link,
    wait_download,
)
from tests.support.service import Client, Footage, sql_rows
from vms import appkeys
from vms.models import Download, Kind, Status

Browsers = Callable[[], Browser]


def asked_range(footage: Footage, minutes: float = 2) -> dict[str, str]:
    """The request form's fields for camera 1, `minutes` from 30 s into the recordings."""
    start = footage.start + timedelta(seconds=30)
    return {
        "camera": "1",
        "from": form_time(start),
        "to": form_time(start + timedelta(minutes=minutes)),
    }


async def ready_archive(service: Client, browser: Browser, footage: Footage) -> Download:
    """Ask for an archive on the page and wait until it is ready."""
    response = await submit(browser, "/history/request", asked_range(footage))
    assert response.status == 303, await response.text()
    [download] = await archives_of(service, "alice")
    return await wait_download(service, download.id, {Status.READY})


# Asking for an archive


async def test_the_page_offers_the_users_cameras_and_the_last_five_minutes(
    browsers: Browsers,
) -> None:
    """The request form lists only the cameras this user may see, from five minutes ago to now."""
    page = await (await signed_in(browsers, "alice")).page("/history")
    form = page[page.index('action="/history/request"') :]
    form = form[: form.index("</form>")]
    assert re.findall(r'<option value="(\d+)"', form) == ["1"]
    start, end = re.findall(r'name="(?:from|to)" value="([^"]+)"', form)
    gap = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    assert gap == timedelta(minutes=5)
    assert abs(datetime.fromisoformat(end).replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(
        seconds=30
    )


async def test_asking_for_an_archive_queues_it_and_goes_back_with_a_note(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """A good request makes one archive on the web session and redirects back, filters kept."""
    alice = await signed_in(browsers, "alice")
    response = await submit(
        alice, "/history/request", {**asked_range(footage), "back": "/history?camera=1"}
    )
    assert response.status == 303
    assert response.headers["Location"] == "/history?camera=1"
    assert note_of(response) == "requested"
    [download] = await archives_of(service, "alice")
    assert download.client == "web" and download.camera_id == 1
    assert download.range_from == footage.start + timedelta(seconds=30)
    page = await alice.page("/history?camera=1")
    assert "The archive was asked for." in page
    assert f'data-id="{download.id}"' in page
    assert "The archive was asked for." not in await alice.page("/history")  # said once
    ready = await wait_download(service, download.id, {Status.READY})
    page = await alice.page("/history")
    assert "Recorded 2 min · " in page
    assert f'href="#play-{ready.id}"' in page and "<video" in page


async def test_a_double_submit_makes_one_archive(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """The same form sent twice at once (a double click) makes one archive."""
    alice = await signed_in(browsers, "alice")
    token = await alice.csrf("/history")
    data = {"_csrf": token, **asked_range(footage)}
    first, second = await asyncio.gather(
        alice.post("/history/request", data), alice.post("/history/request", data)
    )
    assert (first.status, second.status) == (303, 303)
    (made,) = await archives_of(service, "alice")
    # Let the job finish: a fetch still running when the test ends races the loop's teardown.
    await wait_download(service, made.id, {"ready", "failed"})


async def test_the_browsers_offset_reads_the_times_in_its_zone(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """With the offset the script adds (+120 min), 12:00 typed means 10:00 UTC."""
    alice = await signed_in(browsers, "alice")
    start = footage.start + timedelta(seconds=30)
    east = timedelta(minutes=120)
    fields = {
        "camera": "1",
        "from": form_time(start + east),
        "to": form_time(start + east + timedelta(minutes=1)),
        "offset": "120",
    }
    assert (await submit(alice, "/history/request", fields)).status == 303
    [download] = await archives_of(service, "alice")
    assert download.range_from == start


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"camera": ""}, 422, "Choose one of your cameras."),
        ({"camera": "2"}, 422, "Choose one of your cameras."),
        ({"camera": "99999999999999"}, 422, "Choose one of your cameras."),
        ({"from": "yesterday"}, 422, "The from field must be a valid date."),
        ({"to": ""}, 422, "The to field is required."),
        ({"swap": "yes"}, 422, "The to field must be a date after from."),
        ({"from": "2001-01-01T10:00:00", "to": "2001-01-01T10:05:00"}, 422, "no recording"),
    ],
)
async def test_bad_requests_show_the_form_again_with_the_problem(
    service: Client,
    browsers: Browsers,
    footage: Footage,
    change: dict[str, str],
    status: int,
    message: str,
) -> None:
    """A request the rules refuse re-renders the page with the message and the values kept."""
    alice = await signed_in(browsers, "alice")
    fields = asked_range(footage)
    if change.pop("swap", None):
        fields["from"], fields["to"] = fields["to"], fields["from"]
    fields.update(change)
    response = await submit(alice, "/history/request", fields)
    assert response.status == status
    page = await response.text()
    assert message in page
    assert 'aria-invalid="true"' in page
    assert await archives_of(service, "alice") == []


@pytest.mark.parametrize(
    "action", ["/history/request", "/history/downloads/1/cancel", "/history/downloads/1/again"]
)
@pytest.mark.parametrize("token", [None, "", "0" * 64, "from-another-browser"])
async def test_actions_need_this_browsers_csrf_token(
    service: Client, browsers: Browsers, footage: Footage, action: str, token: str | None
) -> None:
    """Every action POST without this browser's CSRF token is a 403 page and changes nothing."""
    await add_downloads(service, 1, 1, 1, kind=Kind.ARCHIVE, status=Status.QUEUED)
    alice = await signed_in(browsers, "alice")
    if token == "from-another-browser":
        token = await browsers().csrf()
    data = {**asked_range(footage), **({"_csrf": token} if token is not None else {})}
    response = await alice.post(action, data)
    assert response.status == 403
    assert "Not allowed" in await response.text()
    archives = await archives_of(service, "alice")
    assert [a.status for a in archives] == [Status.QUEUED]


async def test_a_signed_out_browser_is_sent_to_log_in(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """A form sent after the session ended leads to the login page and back to the list."""
    alice = await signed_in(browsers, "alice")
    token = await alice.csrf("/history")
    db = service.app[appkeys.DB]
    user = next(u for u in await db.users() if u.login == "alice")
    for (session_id,) in await sql_rows(db, "SELECT id FROM sessions"):
        await service.app[appkeys.SESSIONS].end(user, session_id)
    data = {"_csrf": token, **asked_range(footage)}
    response = await alice.post("/history/request", data)
    assert response.status == 303
    assert response.headers["Location"].startswith("/login?next=")
    assert await archives_of(service, "alice") == []


# Cancelling


async def test_cancel_stops_a_running_archive_and_a_second_cancel_changes_nothing(
    service: Client, browsers: Browsers, footage: Footage, slow_media: SlowMedia
) -> None:
    """Cancel stops a running archive; cancelling it again only says it had already ended."""
    alice = await signed_in(browsers, "alice")
    assert (await submit(alice, "/history/request", asked_range(footage))).status == 303
    await asyncio.wait_for(slow_media.holding.wait(), 20)
    [download] = await archives_of(service, "alice")
    page = await alice.page("/history")
    assert f'action="/history/downloads/{download.id}/cancel"' in page
    response = await submit(alice, f"/history/downloads/{download.id}/cancel", {})
    assert response.status == 303 and note_of(response) == "cancelled"
    after = await service.app[appkeys.DB].download(download.id)
    assert after is not None and after.status == Status.CANCELLED
    assert not service.app[appkeys.FILES].path(download.id).exists()
    again = await submit(alice, f"/history/downloads/{download.id}/cancel", {})
    assert again.status == 303 and note_of(again) == "nothing"
    page = await alice.page("/history")
    assert "That archive had already ended" in page
    assert f'action="/history/downloads/{download.id}/again"' in page


async def test_cancel_of_a_finished_archive_keeps_its_file(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """A cancel that arrives after the archive became ready does not delete the file."""
    alice = await signed_in(browsers, "alice")
    ready = await ready_archive(service, alice, footage)
    response = await submit(alice, f"/history/downloads/{ready.id}/cancel", {})
    assert response.status == 303 and note_of(response) == "finished"
    assert service.app[appkeys.FILES].exists(ready.id)


# Deleting


async def test_delete_asks_first_then_deletes_the_file(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """Delete without confirmation shows a confirmation page; with it the file is gone."""
    alice = await signed_in(browsers, "alice")
    ready = await ready_archive(service, alice, footage)
    action = f"/history/downloads/{ready.id}/delete"
    response = await submit(alice, action, {"back": "/history?status=ready"})
    assert response.status == 200
    page = await response.text()
    assert "Delete the archive?" in page and 'name="confirm" value="yes"' in page
    assert 'href="/history?status=ready"' in page  # "Keep it" goes back to the list
    assert service.app[appkeys.FILES].exists(ready.id)
    response = await submit(alice, action, {"confirm": "yes", "back": "/history?status=ready"})
    assert response.status == 303 and note_of(response) == "deleted"
    assert response.headers["Location"] == "/history?status=ready"
    assert not service.app[appkeys.FILES].exists(ready.id)
    after = await service.app[appkeys.DB].download(ready.id)
    assert after is not None and after.status == Status.EXPIRED
    twice = await submit(alice, action, {"confirm": "yes"})
    assert twice.status == 303 and note_of(twice) == "gone"


# Another user's archives, and history records


@pytest.mark.parametrize("verb", ["cancel", "delete", "again"])
async def test_another_users_archive_is_not_found(
    service: Client, browsers: Browsers, verb: str
) -> None:
    """Bob cannot act on Alice's archive (404), and does not see it; nothing changes."""
    [alices] = await add_downloads(service, 1, 1, 1, kind=Kind.ARCHIVE, status=Status.QUEUED)
    bob = await signed_in(browsers, "bob")
    assert f'data-id="{alices.id}"' not in await bob.page("/history")
    response = await submit(bob, f"/history/downloads/{alices.id}/{verb}", {"confirm": "yes"})
    assert response.status == 404
    assert "Page not found" in await response.text()
    missing = await submit(bob, "/history/downloads/999999/cancel", {})
    assert missing.status == 404
    assert [a.status for a in await archives_of(service, "alice")] == [Status.QUEUED]


@pytest.mark.parametrize("verb", ["cancel", "delete", "again"])
async def test_a_history_record_is_kept(
    service: Client, browsers: Browsers, footage: Footage, verb: str
) -> None:
    """A thick-client link record cannot be cancelled, deleted or asked again for (403)."""
    await thick_link(service, footage, "alice", (0, 1))
    db = service.app[appkeys.DB]
    [record], _ = await db.list_downloads(user_id=None, limit=10, offset=0)
    alice = await signed_in(browsers, "alice")
    response = await submit(alice, f"/history/downloads/{record.id}/{verb}", {"confirm": "yes"})
    assert response.status == 403


# Asking again


async def test_asking_again_for_ones_own_cancelled_archive_makes_one_new_archive(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """Ask again makes a new archive of the same camera and range; a double submit makes one."""
    [cancelled] = await add_downloads(
        service, 1, 1, 1, kind=Kind.ARCHIVE, status=Status.CANCELLED, start=footage.start
    )
    alice = await signed_in(browsers, "alice")
    action = f"/history/downloads/{cancelled.id}/again"
    assert f'action="{action}"' in await alice.page("/history")
    token = await alice.csrf("/history")
    first, second = await asyncio.gather(
        alice.post(action, {"_csrf": token}), alice.post(action, {"_csrf": token})
    )
    assert (first.status, second.status) == (303, 303)
    assert note_of(first) == "again"
    archives = await archives_of(service, "alice")
    assert len(archives) == 2
    new = archives[0]
    assert (new.camera_id, new.range_from, new.range_to) == (
        cancelled.camera_id,
        cancelled.range_from,
        cancelled.range_to,
    )
    assert new.client == "web"
    await wait_download(service, new.id, {Status.READY})


@pytest.mark.parametrize(
    ("status", "note"),
    [
        # An expired archive of footage that is gone cannot be made again.
        (Status.EXPIRED, "no-recording"),
        # Ask again is only for failed, cancelled or expired archives.
        (Status.QUEUED, "nothing"),
    ],
)
async def test_asking_again_that_cannot_be_done_says_why_and_makes_nothing(
    service: Client, browsers: Browsers, status: Status, note: str
) -> None:
    """Ask again for a range no longer recorded, or for a queued archive: a note, nothing new."""
    [download] = await add_downloads(service, 1, 1, 1, kind=Kind.ARCHIVE, status=status)
    alice = await signed_in(browsers, "alice")
    response = await submit(alice, f"/history/downloads/{download.id}/again", {})
    assert response.status == 303 and note_of(response) == note
    assert len(await archives_of(service, "alice")) == 1


async def test_an_operator_repeats_someone_elses_failed_archive_once(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """An operator's ask again on Alice's failed archive repeats it for her; twice makes one."""
    [failed] = await add_downloads(
        service, 1, 1, 1, kind=Kind.ARCHIVE, status=Status.FAILED, start=footage.start
    )
    admin = await signed_in(browsers, "admin")
    action = f"/history/downloads/{failed.id}/again"
    token = await admin.csrf("/history")
    first, second = await asyncio.gather(
        admin.post(action, {"_csrf": token}), admin.post(action, {"_csrf": token})
    )
    assert (first.status, second.status) == (303, 303)
    archives = await archives_of(service, "alice")
    assert len(archives) == 2
    assert archives[0].session_id == failed.session_id
    assert await archives_of(service, "admin") == []


# Filters, live rows, and the archive link in a browser


async def test_the_ready_filter_lists_archives_and_links_have_their_own(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """`Ready` matches ready archives only; `Thick-client link` matches only the links."""
    await thick_link(service, footage, "alice", (0, 1))
    alice = await signed_in(browsers, "alice")
    ready = await ready_archive(service, alice, footage)
    ready_page = await alice.page("/history?status=ready")
    assert re.findall(r'<tr data-id="(\d+)"', ready_page) == [str(ready.id)]
    links_page = await alice.page("/history?status=link")
    [link_id] = re.findall(r'<tr data-id="(\d+)"', links_page)
    assert link_id != str(ready.id)
    assert 'value="link" selected' in links_page


async def test_a_short_recording_is_flagged(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """An archive reaching past the recordings' end shows how much was recorded."""
    alice = await signed_in(browsers, "alice")
    start = footage.end - timedelta(minutes=1)
    fields = {
        "camera": "1",
        "from": form_time(start),
        "to": form_time(footage.end + timedelta(minutes=1, seconds=30)),
    }
    assert (await submit(alice, "/history/request", fields)).status == 303
    [download] = await archives_of(service, "alice")
    await wait_download(service, download.id, {Status.READY})
    page = await alice.page("/history")
    assert "Only 1 min of the 2 min 30 s asked for was recorded." in page


async def test_status_sends_new_rows_and_changed_rows_as_html(
    service: Client, browsers: Browsers, footage: Footage
) -> None:
    """/history/status returns rows made since the page was drawn, ready to insert."""
    alice = await signed_in(browsers, "alice")
    page = await alice.page("/history")
    since = re.search(r'data-since="([^"]+)"', page)
    assert since
    assert (await submit(alice, "/history/request", asked_range(footage))).status == 303
    [download] = await archives_of(service, "alice")
    body = await (await alice.get(f"/history/status?since={since.group(1)}")).json()
    assert [a["id"] for a in body["added"]] == [download.id]
    assert f'<tr data-id="{download.id}"' in body["added"][0]["html"]
    assert 'name="_csrf"' in body["added"][0]["html"]
    assert body["since"] > since.group(1)
    later = await (await alice.get(f"/history/status?since={body['since']}")).json()
    assert later["added"] == [] and later["newer"] == 0
    await wait_download(service, download.id, {Status.READY})
    body = await (await alice.get(f"/history/status?ids={download.id}")).json()
    assert 'data-role="play"' in body["data"][0]["html"]


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
        ("application/json", "json"),
        ("*/*", "json"),
        ("application/json, text/html;q=0.5", "json"),
        ("", "json"),
    ],
)
async def test_an_expired_archive_link_is_a_friendly_page_in_a_browser(
    service: Client, browsers: Browsers, footage: Footage, accept: str, kind: str
) -> None:
    """A deleted archive's link answers 410 as an HTML page to a browser, JSON otherwise."""
    alice = await signed_in(browsers, "alice")
    ready = await ready_archive(service, alice, footage)
    url = service.app[appkeys.RESOURCES].facts(ready).url
    assert url is not None
    await submit(alice, f"/history/downloads/{ready.id}/delete", {"confirm": "yes"})
    path = url[url.index("/archive/") :]
    headers = {"Accept": accept} if accept else {}
    for target, status in ((path, 410), (path.replace("signature=", "signature=0"), 403)):
        response = await service.get(target, headers=headers)
        assert response.status == status
        if kind == "html":
            assert response.content_type == "text/html"
            text = await response.text()
            assert "Go to the downloads" in text and "{" not in text.split("<body")[1][:200]
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        else:
            assert response.content_type == "application/json"
