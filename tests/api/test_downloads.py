"""The download history: GET /api/v1/downloads (a Laravel paginator) and one record by id."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.service import Client, Footage, bearer, login, rfc3339

DOWNLOAD_KEYS = {
    "id",
    "name",
    "type",
    "url",
    "from",
    "to",
    "created_at",
    "updated_at",
    "is_file_exists",
    "user_id",
    "camera_id",
    "status",
    "kind",
    "progress",
    "message",
    "size",
    "duration",
    "expires_at",
    "sha256",
}
LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


async def _make_links(
    client: Client,
    answer: dict[str, Any],
    footage: Footage,
    count: int,
    *,
    camera: int = 1,
    device: str = "device-a",
) -> None:
    """`count` history records through the API, oldest first, each for a different range."""
    for index in range(count):
        start = footage.start + timedelta(seconds=5 + index)
        response = await client.get(
            f"/api/v1/cameras/{camera}/archive/link",
            params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=30))},
            headers=bearer(answer, device),
        )
        assert response.status == 200, await response.text()


async def _list(
    client: Client, answer: dict[str, Any], **params: str
) -> tuple[int, dict[str, Any]]:
    response = await client.get("/api/v1/downloads", params=params, headers=bearer(answer))
    return response.status, await response.json()


def _page_of(url: str | None) -> int | None:
    if url is None:
        return None
    return int(parse_qs(urlsplit(url).query)["page"][0])


def _assert_download(item: dict[str, Any]) -> None:
    assert set(item) == DOWNLOAD_KEYS
    assert isinstance(item["id"], int)
    # a history record: no file, so no progress, size, duration, expiry or digest
    assert item["kind"] == "link"
    assert [item[k] for k in ("progress", "size", "duration", "expires_at", "sha256")] == [None] * 5
    assert item["type"] == "mp4"
    assert item["name"].endswith(".mp4")
    assert LOCAL.match(item["from"]) and LOCAL.match(item["to"])
    assert STAMP.match(item["created_at"]) and STAMP.match(item["updated_at"])
    assert isinstance(item["is_file_exists"], bool)
    assert item["status"] in {"queued", "in progress", "ready", "failed", "expired"}
    assert item["url"] is None or isinstance(item["url"], str)


async def test_empty_history_has_the_paginator_shape(service: Client) -> None:
    """No records: data [], links first/last page 1, prev/next null, meta with from/to null."""
    answer = await login(service)
    status, body = await _list(service, answer)
    assert status == 200
    assert set(body) == {"data", "links", "meta"}
    assert body["data"] == []
    assert set(body["links"]) == {"first", "last", "prev", "next"}
    assert (_page_of(body["links"]["first"]), _page_of(body["links"]["last"])) == (1, 1)
    assert (body["links"]["prev"], body["links"]["next"]) == (None, None)
    path = str(service.make_url("/api/v1/downloads"))
    assert body["meta"] == {
        "current_page": 1,
        "from": None,
        "last_page": 1,
        "path": path,
        "per_page": 25,
        "to": None,
        "total": 0,
    }


async def test_pages_of_25_newest_first(service: Client, footage: Footage) -> None:
    """30 records: page 1 has the 25 newest, page 2 the 5 oldest, links and meta agree."""
    answer = await login(service)
    await _make_links(service, answer, footage, 30)
    status, first = await _list(service, answer)
    assert status == 200
    assert len(first["data"]) == 25
    for item in first["data"]:
        _assert_download(item)
    ids = [item["id"] for item in first["data"]]
    assert ids == sorted(ids, reverse=True)
    created = [item["created_at"] for item in first["data"]]
    assert created == sorted(created, reverse=True)
    # The newest record is the last range asked for.
    newest_start = footage.start + timedelta(seconds=5 + 29)
    assert first["data"][0]["from"] == newest_start.strftime("%Y-%m-%d %H:%M:%S")
    meta = first["meta"]
    assert (meta["current_page"], meta["from"], meta["to"], meta["total"]) == (1, 1, 25, 30)
    assert (meta["last_page"], meta["per_page"]) == (2, 25)
    links = first["links"]
    assert [_page_of(links[k]) for k in ("first", "last", "prev", "next")] == [1, 2, None, 2]
    for key in ("first", "last", "next"):
        assert links[key].startswith(meta["path"] + "?")

    status, second = await _list(service, answer, page="2")
    assert status == 200
    assert len(second["data"]) == 5
    assert second["data"][0]["id"] < ids[-1]
    meta = second["meta"]
    assert (meta["current_page"], meta["from"], meta["to"], meta["total"]) == (2, 26, 30, 30)
    links = second["links"]
    assert [_page_of(links[k]) for k in ("first", "last", "prev", "next")] == [1, 2, 1, None]
    all_ids = ids + [item["id"] for item in second["data"]]
    assert len(set(all_ids)) == 30


async def test_following_next_links_visits_every_record_once(
    service: Client, footage: Footage
) -> None:
    """Walking `next` with per_page=4 over 10 records gives each record once, newest first."""
    answer = await login(service)
    await _make_links(service, answer, footage, 10)
    seen: list[int] = []
    url: str | None = str(service.make_url("/api/v1/downloads")) + "?per_page=4"
    pages = 0
    while url is not None:
        response = await service.session.get(url, headers=bearer(answer))
        assert response.status == 200
        body = await response.json()
        assert body["meta"]["per_page"] == 4
        seen += [item["id"] for item in body["data"]]
        url = body["links"]["next"]
        pages += 1
    assert pages == 3
    assert seen == sorted(set(seen), reverse=True) and len(seen) == 10


@pytest.mark.parametrize("page", ["3", "50", "1000000"])
async def test_page_past_the_end_is_empty(service: Client, footage: Footage, page: str) -> None:
    """A page after the last one answers 200 with empty data and the true total."""
    answer = await login(service)
    await _make_links(service, answer, footage, 3)
    status, body = await _list(service, answer, page=page, per_page="2")
    assert status == 200, body
    assert body["data"] == []
    assert body["meta"]["current_page"] == int(page)
    assert (body["meta"]["from"], body["meta"]["to"]) == (None, None)
    assert (body["meta"]["total"], body["meta"]["last_page"]) == (3, 2)


@pytest.mark.parametrize("per_page", ["1", "100"])
async def test_per_page_limits_are_inclusive(
    service: Client, footage: Footage, per_page: str
) -> None:
    """per_page 1 and 100 are accepted."""
    answer = await login(service)
    await _make_links(service, answer, footage, 2)
    status, body = await _list(service, answer, per_page=per_page)
    assert status == 200, body
    assert body["meta"]["per_page"] == int(per_page)
    assert len(body["data"]) == min(2, int(per_page))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("per_page", "101"),
        ("per_page", "0"),
        ("per_page", "-1"),
        ("per_page", "abc"),
        ("per_page", "1.5"),
        ("per_page", "99999999999999999999"),
        ("per_page", "٣"),
        ("per_page", "３"),
        ("page", "0"),
        ("page", "-1"),
        ("page", "abc"),
        ("page", "2.0"),
        ("page", "1000001"),
        ("page", "٢"),
        ("from", "yesterday"),
        ("to", "2026-11-23T10:20:00"),
        ("from", "9999-12-31T23:59:59-23:59"),
        ("from", "٢٠٢٦-11-23 10:20:00"),
        ("to", "0001-01-01T00:00:00+23:59"),
    ],
)
async def test_bad_list_parameters_are_422(service: Client, name: str, value: str) -> None:
    """per_page over 100 or not a positive integer, a bad page or a bad date: 422 on that key."""
    answer = await login(service)
    status, body = await _list(service, answer, **{name: value})
    assert status == 422, body
    assert list(body["errors"]) == [name]
    assert body["message"] == body["errors"][name][0]


@pytest.mark.parametrize("name", ["page", "per_page", "from", "to"])
async def test_an_empty_list_parameter_counts_as_absent(
    service: Client, footage: Footage, name: str
) -> None:
    """`per_page=` and the like are ignored, as Laravel's ConvertEmptyStringsToNull makes them."""
    answer = await login(service)
    await _make_links(service, answer, footage, 2)
    status, body = await _list(service, answer, **{name: ""})
    assert status == 200, body
    assert (body["meta"]["current_page"], body["meta"]["per_page"]) == (1, 25)
    assert body["meta"]["total"] == 2


async def test_from_and_to_filter_on_creation_time(service: Client, footage: Footage) -> None:
    """from/to keep records created inside the bounds (inclusive), whatever their footage range."""
    answer = await login(service)
    await _make_links(service, answer, footage, 3)
    _, body = await _list(service, answer)
    newest, middle, oldest = body["data"]
    _, after = await _list(service, answer, **{"from": middle["created_at"]})
    assert [item["id"] for item in after["data"]] == [newest["id"], middle["id"]]
    assert after["meta"]["total"] == 2
    _, before = await _list(service, answer, to=middle["created_at"])
    assert [item["id"] for item in before["data"]] == [middle["id"], oldest["id"]]
    _, both = await _list(
        service, answer, **{"from": middle["created_at"], "to": middle["created_at"]}
    )
    assert [item["id"] for item in both["data"]] == [middle["id"]]

    now = datetime.now(UTC)
    _, future = await _list(service, answer, **{"from": rfc3339(now + timedelta(hours=1))})
    assert future["data"] == [] and future["meta"]["total"] == 0
    _, past = await _list(service, answer, to=rfc3339(now - timedelta(hours=1)))
    assert past["data"] == []
    # The footage range of the records is long past: filtering is not on from/to of footage.
    hour_ago = (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    _, recent = await _list(service, answer, **{"from": hour_ago})
    assert recent["meta"]["total"] == 3


async def test_filters_are_kept_in_page_links(service: Client, footage: Footage) -> None:
    """The paginator links keep per_page and the date filters."""
    answer = await login(service)
    await _make_links(service, answer, footage, 3)
    since = rfc3339(datetime.now(UTC) - timedelta(hours=1))
    _, body = await _list(service, answer, per_page="1", **{"from": since})
    query = parse_qs(urlsplit(body["links"]["next"]).query)
    assert query["per_page"] == ["1"]
    assert query["from"] == [since]
    assert query["page"] == ["2"]


async def test_users_see_only_their_own_records(service: Client, footage: Footage) -> None:
    """Alice's records never show in Bob's or the operator's API list, and the reverse."""
    alice = await login(service, "alice", device="a")
    bob = await login(service, "bob", device="b")
    admin = await login(service, "admin", device="c")
    await _make_links(service, alice, footage, 2, device="a")
    for answer, device in ((bob, "b"), (admin, "c")):
        response = await service.get("/api/v1/downloads", headers=bearer(answer, device))
        assert (await response.json())["data"] == []
    # Bob makes his own on his own camera and sees only that.
    start = footage.start + timedelta(seconds=10)
    response = await service.get(
        "/api/v1/cameras/2/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=20))},
        headers=bearer(bob, "b"),
    )
    assert response.status == 200
    bob_list = await (await service.get("/api/v1/downloads", headers=bearer(bob, "b"))).json()
    assert [item["camera_id"] for item in bob_list["data"]] == [2]
    assert bob_list["data"][0]["user_id"] == bob["user"]["id"]
    alice_list = await (await service.get("/api/v1/downloads", headers=bearer(alice, "a"))).json()
    assert {item["user_id"] for item in alice_list["data"]} == {alice["user"]["id"]}
    assert alice_list["meta"]["total"] == 2


async def test_records_from_all_devices_of_a_user_are_listed(
    service: Client, footage: Footage
) -> None:
    """A user's history spans their sessions: a record made on one device shows on another."""
    laptop = await login(service, device="laptop")
    await _make_links(service, laptop, footage, 1, device="laptop")
    desk = await login(service, device="desk")
    response = await service.get("/api/v1/downloads", headers=bearer(desk, "desk"))
    assert (await response.json())["meta"]["total"] == 1


async def test_show_gives_one_own_record(service: Client, footage: Footage) -> None:
    """GET /downloads/{id} answers {"data": DOWNLOAD}, the same record the list shows."""
    answer = await login(service)
    await _make_links(service, answer, footage, 2)
    _, body = await _list(service, answer)
    listed = body["data"][1]
    response = await service.get(f"/api/v1/downloads/{listed['id']}", headers=bearer(answer))
    assert response.status == 200
    shown = await response.json()
    assert set(shown) == {"data"}
    _assert_download(shown["data"])
    assert {k: v for k, v in shown["data"].items() if k != "url"} == {
        k: v for k, v in listed.items() if k != "url"
    }


async def test_another_users_record_is_404(service: Client, footage: Footage) -> None:
    """Bob asking for Alice's record by id gets 404, exactly as for one that does not exist."""
    alice = await login(service, "alice", device="a")
    await _make_links(service, alice, footage, 1, device="a")
    response = await service.get("/api/v1/downloads", headers=bearer(alice, "a"))
    body = await response.json()
    record_id = body["data"][0]["id"]
    for user, device in (("bob", "b"), ("admin", "c")):
        other = await login(service, user, device=device)
        response = await service.get(
            f"/api/v1/downloads/{record_id}", headers=bearer(other, device)
        )
        assert response.status == 404, user
        assert set(await response.json()) == {"message"}


@pytest.mark.parametrize(
    "ref",
    [
        "abc",
        "-1",
        "0",
        "99999999999999999999",
        "..%2F1",
        "1.0",
        "1e0",
        "%EF%BC%91",
        "%C2%B9",
        "%201",
        "0x1",
    ],
)
async def test_nonsense_ids_are_404(service: Client, footage: Footage, ref: str) -> None:
    """Ids that are not a record's id are 404 {"message"}, even when they look like one (`１`)."""
    answer = await login(service)
    await _make_links(service, answer, footage, 1)
    _, body = await _list(service, answer)
    assert body["data"][0]["id"] == 1  # so a sloppy parse of `１` or ` 1` would find it
    response = await service.get(f"/api/v1/downloads/{ref}", headers=bearer(answer))
    assert response.status == 404, ref
    assert set(await response.json()) == {"message"}


@pytest.mark.parametrize(
    ("drop", "errors"),
    [
        ("X-Client", {"X-Client": ["The X-Client field is required."]}),
        ("X-UUID", {"X-UUID": ["The X-UUID field is required."]}),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/downloads", "/api/v1/downloads/1"])
async def test_an_accepted_token_without_a_device_header_is_422_on_that_key(
    service: Client, path: str, drop: str, errors: dict[str, list[str]]
) -> None:
    """With a good token, a missing X-Client or X-UUID is a 422 on that header's key."""
    headers = bearer(await login(service))
    del headers[drop]
    response = await service.get(path, headers=headers)
    assert response.status == 422
    assert await response.json() == {"message": errors[drop][0], "errors": errors}
