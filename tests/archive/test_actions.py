"""Acting on archives: cameras, batches, cancel, delete, repeat; and what a DOWNLOAD tells."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.badserver import BadMediaServer
from tests.support.pusher import PusherClient
from tests.support.service import Client, Footage, bearer, login, rfc3339, wait_status
from vms import appkeys
from vms.archive.cleanup import purge_expired
from vms.dates import utcnow
from vms.models import Kind

PHONE = "phone-1"


def _range(footage: Footage, offset: int = 30, seconds: int = 60) -> dict[str, str]:
    start = footage.start + timedelta(seconds=offset)
    return {"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=seconds))}


async def _ask(
    client: Client, answer: dict[str, Any], footage: Footage, camera: int = 1, offset: int = 30
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/cameras/{camera}/archive/link",
        params=_range(footage, offset),
        headers=bearer(answer, PHONE, "ios-cctv"),
    )
    assert response.status == 202, await response.text()
    download: dict[str, Any] = (await response.json())["download"]
    return download


async def _batch(
    client: Client,
    answer: dict[str, Any],
    body: dict[str, Any],
    *,
    x_client: str = "ios-cctv",
    device: str = PHONE,
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/api/v1/downloads", json=body, headers=bearer(answer, device, x_client)
    )
    return response.status, await response.json()


async def _count(client: Client) -> int:
    _, total = await client.app[appkeys.DB].list_downloads(
        user_id=None, kinds=(Kind.LINK, Kind.ARCHIVE), limit=0, offset=0
    )
    return total


async def test_the_camera_list_is_what_the_caller_may_see(service: Client) -> None:
    """A user gets the granted cameras, an operator all of them, by id; no token is 401."""
    alice, admin = await login(service, "alice"), await login(service, "admin")
    response = await service.get("/api/v1/cameras", headers=bearer(alice))
    assert await response.json() == {"data": [{"id": 1, "name": "Gate"}]}
    response = await service.get("/api/v1/cameras", headers=bearer(admin))
    assert [c["id"] for c in (await response.json())["data"]] == [1, 2, 3]
    assert (await service.get("/api/v1/cameras")).status == 401


async def test_a_ready_archive_says_what_its_file_holds(service: Client, footage: Footage) -> None:
    """progress 100, size and sha256 of the very file, the footage's seconds, the expiry."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    asked = await _ask(service, answer, footage)
    assert asked["kind"] == "archive" and asked["progress"] == 0
    assert asked["size"] is None and asked["sha256"] is None and asked["expires_at"] is None
    ready = await wait_status(service, answer, asked["id"], {"ready"})
    body = service.app[appkeys.FILES].path(ready["id"]).read_bytes()
    assert ready["progress"] == 100 and ready["message"] is None
    assert ready["size"] == len(body)
    assert ready["sha256"] == hashlib.sha256(body).hexdigest()
    assert 59.0 <= ready["duration"] <= 62.5  # up to one GOP before `from`
    ttl = service.app[appkeys.CONFIG].archive_ttl
    expires = ready["expires_at"]
    assert (
        expires is not None
        and abs(
            (utcnow() + timedelta(seconds=ttl)).timestamp()
            - __import__("datetime").datetime.strptime(expires, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
        )
        < 30
    )


async def test_to_in_the_future_is_refused(service: Client, footage: Footage) -> None:
    """Footage not recorded yet cannot be in a file: 422 on `to`."""
    answer = await login(service)
    start = utcnow() - timedelta(minutes=1)
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=5))},
        headers=bearer(answer),
    )
    assert response.status == 422
    assert (await response.json())["errors"] == {
        "to": ["The to field must be a date before or equal to now."]
    }


async def test_the_list_shows_archives_or_both_by_kind(service: Client, footage: Footage) -> None:
    """kind=archive lists server-side archives, kind=all both, the default only links."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    asked = await _ask(service, answer, footage)
    headers = bearer(answer, PHONE, "ios-cctv")
    lists = {}
    for kind in (None, "archive", "all"):
        params = {"kind": kind} if kind else {}
        response = await service.get("/api/v1/downloads", params=params, headers=headers)
        lists[kind] = [d["id"] for d in (await response.json())["data"]]
    assert lists == {None: [], "archive": [asked["id"]], "all": [asked["id"]]}
    response = await service.get("/api/v1/downloads", params={"kind": "x"}, headers=headers)
    assert response.status == 422
    assert (await response.json())["errors"] == {"kind": ["The selected kind is invalid."]}


async def test_a_batch_for_the_thick_client_is_links_at_once(
    service: Client, footage: Footage
) -> None:
    """Two cameras in one request: 200 with two history records, each with a working link."""
    admin = await login(service, "admin", device="pc")
    status, body = await _batch(
        service, admin, {**_range(footage), "ids": [1, 2]}, x_client="thick-legal", device="pc"
    )
    assert status == 200, body
    assert [d["camera_id"] for d in body["data"]] == [1, 2]
    assert all(d["kind"] == "link" and d["url"] for d in body["data"])


async def test_a_batch_for_a_phone_queues_each_and_pushes_each(
    service: Client, footage: Footage
) -> None:
    """202 with one archive per camera; each becomes ready and is announced to the device."""
    admin = await login(service, "admin", device=PHONE, x_client="ios-cctv")
    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, admin, PHONE)
    await pusher.next_event("pusher_internal:subscription_succeeded")
    response = await service.post(
        "/api/v1/downloads",
        data=[*_range(footage).items(), ("ids[]", "1"), ("ids[]", "2")],
        headers=bearer(admin, PHONE, "ios-cctv"),
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["status"] == "queued"
    ids = {d["id"] for d in body["data"]}
    announced: set[int] = set()
    while announced != ids:
        event = await pusher.archive_event("archive_generated")
        assert event["status"] == "ok"
        announced.add(event["data"]["download"]["id"])
    await pusher.ws.close()


@pytest.mark.parametrize(
    ("ids", "errors"),
    [
        ([1, 1], {"ids.1": ["The ids.1 field has a duplicate value."]}),
        ([1, 99], {"ids.1": ["The selected ids.1 is invalid."]}),
        ([2], {"ids.0": ["The selected ids.0 is invalid."]}),  # alice may not see camera 2
        (
            [1, "x", 1.5],
            {
                "ids.1": ["The ids.1 field must be an integer."],
                "ids.2": ["The ids.2 field must be an integer."],
            },
        ),
        (list(range(1, 52)), {"ids": ["The ids field must not have more than 50 items."]}),
        ([], {"ids": ["The ids field is required."]}),
        ("1,2", {"ids.0": ["The ids.0 field must be an integer."]}),
        ({"a": 1}, {"ids": ["The ids field must be an array."]}),
    ],
)
async def test_a_bad_batch_is_refused_whole(
    service: Client, footage: Footage, ids: Any, errors: dict[str, list[str]]
) -> None:
    """Duplicates, unknown, unseen, non-integer or too many ids: 422 and nothing made."""
    alice = await login(service, "alice", device=PHONE, x_client="ios-cctv")
    before = await _count(service)
    status, body = await _batch(service, alice, {**_range(footage), "ids": ids})
    assert status == 422
    assert body["errors"] == errors
    assert await _count(service) == before


async def test_a_batch_with_a_camera_without_footage_is_refused_whole(
    service: Client, footage: Footage
) -> None:
    """Camera 3 recorded nothing: 422 on its index, and camera 1 gets no archive either."""
    admin = await login(service, "admin", device=PHONE, x_client="ios-cctv")
    before = await _count(service)
    status, body = await _batch(service, admin, {**_range(footage), "ids": [1, 3]})
    assert status == 422
    assert body["errors"] == {"ids.1": ["No recording found between from and to."]}
    assert await _count(service) == before


async def test_a_batch_past_the_device_cap_is_refused_whole(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """With two archives held running, a batch of two more would pass the cap of 3: 429."""
    bad_camera.mode = "stall"
    admin = await login(service, "admin", device=PHONE, x_client="ios-cctv")
    for offset in (10, 20):
        await _ask(service, admin, footage, offset=offset)
    before = await _count(service)
    status, body = await _batch(service, admin, {**_range(footage, 40), "ids": [1, 2]})
    assert status == 429 and body == {"message": "Too Many Attempts."}
    assert await _count(service) == before


async def test_cancel_stops_the_fetch_within_a_second_and_tells_the_device(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """DELETE of a running archive: cancelled, no partial file, `archive_generated` error."""
    bad_camera.mode = "stall"
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, answer, PHONE)
    await pusher.next_event("pusher_internal:subscription_succeeded")
    asked = await _ask(service, answer, footage)
    await wait_status(service, answer, asked["id"], {"in progress"})
    files = service.app[appkeys.FILES]
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await service.delete(
        f"/api/v1/downloads/{asked['id']}", headers=bearer(answer, PHONE, "ios-cctv")
    )
    assert loop.time() - started < 1.5
    assert response.status == 200
    data = (await response.json())["data"]
    assert (data["status"], data["message"], data["url"]) == ("cancelled", "Cancelled.", None)
    assert not files.partial_path(asked["id"]).exists() and not files.exists(asked["id"])
    event = await pusher.archive_event("archive_generated")
    assert event["status"] == "error" and event["message"] == "Cancelled."
    assert event["data"]["download"]["status"] == "cancelled"
    # Cancelling again changes nothing and pushes nothing.
    again = await service.delete(
        f"/api/v1/downloads/{asked['id']}", headers=bearer(answer, PHONE, "ios-cctv")
    )
    assert (await again.json())["data"]["status"] == "cancelled"
    with pytest.raises(TimeoutError):
        await pusher.archive_event("archive_generated", timeout=0.3)
    await pusher.ws.close()


async def test_a_double_click_on_cancel_cancels_once(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """Two DELETEs at once: both answer cancelled, and the row is written once."""
    bad_camera.mode = "stall"
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    asked = await _ask(service, answer, footage)
    await wait_status(service, answer, asked["id"], {"in progress"})
    path = f"/api/v1/downloads/{asked['id']}"
    headers = bearer(answer, PHONE, "ios-cctv")
    first, second = await asyncio.gather(
        service.delete(path, headers=headers), service.delete(path, headers=headers)
    )
    bodies = [(await r.json())["data"] for r in (first, second)]
    assert [b["status"] for b in bodies] == ["cancelled", "cancelled"]
    assert bodies[0]["updated_at"] == bodies[1]["updated_at"]


async def test_deleting_a_ready_archive_removes_its_file_and_its_link_answers_410(
    service: Client, footage: Footage
) -> None:
    """The file goes at once; the download reads expired; its signed URL is 410."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    ready = await wait_status(
        service, answer, (await _ask(service, answer, footage))["id"], {"ready"}
    )
    response = await service.delete(
        f"/api/v1/downloads/{ready['id']}", headers=bearer(answer, PHONE, "ios-cctv")
    )
    data = (await response.json())["data"]
    assert (data["status"], data["is_file_exists"], data["url"]) == ("expired", False, None)
    assert not service.app[appkeys.FILES].exists(ready["id"])
    url = urlsplit(ready["url"])
    assert (await service.get(f"{url.path}?{url.query}")).status == 410


async def test_delete_refuses_records_and_other_users_archives(
    service: Client, footage: Footage
) -> None:
    """A history record is kept (403); another user's archive is 404; an operator may."""
    alice = await login(service, "alice", device=PHONE, x_client="ios-cctv")
    asked = await _ask(service, alice, footage)
    thick = await login(service, "alice", device="pc")
    response = await service.get(
        "/api/v1/cameras/1/archive/link", params=_range(footage), headers=bearer(thick, "pc")
    )
    assert response.status == 200
    listing = await service.get("/api/v1/downloads", headers=bearer(thick, "pc"))
    record = (await listing.json())["data"][0]["id"]
    response = await service.delete(f"/api/v1/downloads/{record}", headers=bearer(thick, "pc"))
    assert response.status == 403
    assert await response.json() == {"message": "This action is unauthorized."}
    bob = await login(service, "bob")
    response = await service.delete(f"/api/v1/downloads/{asked['id']}", headers=bearer(bob))
    assert response.status == 404
    admin = await login(service, "admin")
    response = await service.delete(f"/api/v1/downloads/{asked['id']}", headers=bearer(admin))
    assert response.status == 200
    assert (await response.json())["data"]["status"] in ("cancelled", "expired")


async def test_an_operator_repeats_an_archive_for_its_device(
    service: Client, footage: Footage
) -> None:
    """Repeat: 202 with a new archive of the same camera and range, pushed to the original."""
    alice = await login(service, "alice", device=PHONE, x_client="ios-cctv")
    original = await wait_status(
        service, alice, (await _ask(service, alice, footage))["id"], {"ready"}
    )
    pusher = await PusherClient.connect(service)
    await pusher.subscribe(service, alice, PHONE)
    await pusher.archive_event("archive_generated")  # the replay of the original
    path = f"/api/admin/v1/downloads/{original['id']}/repeat"
    response = await service.post(path, headers=bearer(alice, PHONE, "ios-cctv"))
    assert response.status == 403  # not an operator
    admin = await login(service, "admin")
    response = await service.post(path, headers=bearer(admin))
    assert response.status == 202
    body = await response.json()
    again = body["download"]
    assert body["status"] == "queued" and again["id"] != original["id"]
    same = ("camera_id", "from", "to", "user_id")
    assert [again[k] for k in same] == [original[k] for k in same]
    event = await pusher.archive_event("archive_generated")
    # The original's own announcement may land after the subscription's replay of it.
    while event["data"]["download"]["id"] == original["id"]:
        event = await pusher.archive_event("archive_generated")
    assert event["data"]["download"]["id"] == again["id"] and event["status"] == "ok"
    missing = await service.post("/api/admin/v1/downloads/999999/repeat", headers=bearer(admin))
    assert missing.status == 404
    await pusher.ws.close()


async def test_delete_racing_the_cleanup_timer_ends_expired_without_an_error(
    service: Client, footage: Footage
) -> None:
    """DELETE and the timer's purge of the same archive at once: expired, no file, no error."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    ready = await wait_status(
        service, answer, (await _ask(service, answer, footage))["id"], {"ready"}
    )
    later = utcnow() + timedelta(seconds=service.app[appkeys.CONFIG].archive_ttl + 1)
    files = service.app[appkeys.FILES]
    response, _ = await asyncio.gather(
        service.delete(
            f"/api/v1/downloads/{ready['id']}", headers=bearer(answer, PHONE, "ios-cctv")
        ),
        purge_expired(service.app[appkeys.DB], files, later),
    )
    assert response.status == 200
    assert (await response.json())["data"]["status"] == "expired"
    assert not files.exists(ready["id"]) and not files.poster_path(ready["id"]).exists()


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.01, 0.02, 0.04, 0.08])
async def test_delete_racing_the_fetchs_last_write_leaves_no_file(
    service: Client, footage: Footage, bad_camera: BadMediaServer, delay: float
) -> None:
    """A fetch takes milliseconds here: whether DELETE lands before, during or just after the
    file is written, renamed and recorded, no file is left behind and the row agrees."""
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    asked = await _ask(service, answer, footage)
    await asyncio.sleep(delay)
    response = await service.delete(
        f"/api/v1/downloads/{asked['id']}", headers=bearer(answer, PHONE, "ios-cctv")
    )
    status = (await response.json())["data"]["status"]
    assert status in ("cancelled", "expired")
    await asyncio.sleep(0.5)  # whatever the job was doing has ended by now
    files = service.app[appkeys.FILES]
    leftovers = [p.name for p in files.root.iterdir() if p.name.startswith(f"{asked['id']}.")]
    assert leftovers == []
    final = await wait_status(service, answer, asked["id"], {"cancelled", "expired"})
    assert final["status"] == status
