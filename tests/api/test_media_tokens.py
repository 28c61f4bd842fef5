"""Media tokens name the range they were issued for, and MediaMTX's auth hook honours that."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest

from tests.support.service import Client, Footage, bearer, login, rfc3339
from vms import appkeys
from vms.dates import utcnow

HOOK = "/api/v1/mediamtx/auth"


def _window(footage: Footage) -> tuple[datetime, datetime]:
    start = footage.start + timedelta(seconds=20)
    return start, start + timedelta(seconds=40)


async def _link(client: Client, answer: dict[str, Any], footage: Footage) -> str:
    start, end = _window(footage)
    response = await client.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(end)},
        headers=bearer(answer),
    )
    assert response.status == 200, await response.text()
    link: str = (await response.json())["link"]
    return link


def _query(link: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


def _with(link: str, **changes: str) -> str:
    parts = urlsplit(link)
    return parts._replace(query=urlencode({**_query(link), **changes})).geturl()


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        await response.read()
        return response.status


async def test_a_link_token_names_its_user_and_range(service: Client, footage: Footage) -> None:
    """The link's media token carries the asked range and the user it was issued to."""
    answer = await login(service)
    token = _query(await _link(service, answer, footage))["jwt"]
    claims = jwt.decode(token, options={"verify_signature": False})
    start, end = _window(footage)
    assert claims["vms_range"] == [start.timestamp(), end.timestamp()]
    assert claims["sub"] == str(answer["user"]["id"])


async def test_two_users_asking_at_once_never_share_a_media_token(
    service: Client, footage: Footage
) -> None:
    """Links for the same camera and range, made in the same instant, carry different tokens."""
    alice = await login(service, "alice")
    admin = await login(service, "admin")
    first = _query(await _link(service, alice, footage))["jwt"]
    second = _query(await _link(service, admin, footage))["jwt"]
    assert first != second
    subjects = {jwt.decode(t, options={"verify_signature": False})["sub"] for t in (first, second)}
    assert subjects == {str(alice["user"]["id"]), str(admin["user"]["id"])}


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("earlier start", {"start_shift": -30.0}),
        ("later start, same length", {"start_shift": 30.0}),
        ("longer duration", {"duration": "120"}),
    ],
)
async def test_the_embedded_media_server_refuses_footage_outside_the_token(
    service: Client, footage: Footage, name: str, change: dict[str, Any]
) -> None:
    """/get with the link's token but another time is 401; the link itself plays."""
    link = await _link(service, await login(service), footage)
    assert await _status(link) == 200
    start, _ = _window(footage)
    changes = {}
    if "start_shift" in change:
        changes["start"] = rfc3339(start + timedelta(seconds=change["start_shift"]))
    if "duration" in change:
        changes["duration"] = change["duration"]
    assert await _status(_with(link, **changes)) == 401, name


async def test_a_shorter_piece_inside_the_range_plays(service: Client, footage: Footage) -> None:
    """Seeking inside the range (a later start, a shorter duration) is allowed."""
    link = await _link(service, await login(service), footage)
    start, _ = _window(footage)
    inside = _with(link, start=rfc3339(start + timedelta(seconds=10)), duration="20")
    assert await _status(inside) == 200


def _media_token(client: Client, start: datetime, end: datetime, **changes: Any) -> str:
    token = client.app[appkeys.AUTH].media_token("camera1", start, end, utcnow())
    if not changes:
        return token
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    keystore = client.app[appkeys.KEYSTORE]
    return jwt.encode(claims, keystore.signing_key, "EdDSA", headers={"kid": keystore.kid})


def _mediamtx_body(query: str = "", **fields: Any) -> dict[str, Any]:
    """The JSON MediaMTX 1.x posts to authHTTPAddress for a playback request."""
    return {
        "user": "",
        "password": "",
        "token": "",
        "ip": "192.0.2.10",
        "action": "playback",
        "path": "camera1",
        "protocol": "",
        "id": None,
        "query": query,
        "userAgent": "VLC/3.0.20",
        **fields,
    }


async def _hook(client: Client, body: Any) -> tuple[int, Any]:
    response = await client.post(HOOK, json=body)
    return response.status, await response.json()


async def test_the_hook_accepts_the_link_as_mediamtx_forwards_it(
    service: Client, footage: Footage
) -> None:
    """MediaMTX posts the client's query with `jwt=`: 200, no device headers needed."""
    link = await _link(service, await login(service), footage)
    assert await _hook(service, _mediamtx_body(urlsplit(link).query)) == (200, {"status": "ok"})


@pytest.mark.parametrize("where", ["token", "password", "query-token", "query-jwt"])
async def test_the_hook_finds_the_token_wherever_mediamtx_puts_it(
    service: Client, footage: Footage, where: str
) -> None:
    """Bearer (MediaMTX's `token`), Basic password, `?token=` and `?jwt=` are all read."""
    start, end = _window(footage)
    token = _media_token(service, start, end)
    query = urlencode({"path": "camera1", "start": rfc3339(start), "duration": "40"})
    fields: dict[str, Any] = {}
    if where in ("token", "password"):
        fields[where] = token
    else:
        query += "&" + urlencode({where.split("-")[1]: token})
    assert (await _hook(service, _mediamtx_body(query, **fields)))[0] == 200


async def test_the_hook_covers_list_requests_inside_the_range(
    service: Client, footage: Footage
) -> None:
    """A /list between the token's start and end is allowed; one reaching past it is not."""
    start, end = _window(footage)
    token = _media_token(service, start, end)
    inside = urlencode({"path": "camera1", "start": rfc3339(start), "end": rfc3339(end)})
    past = urlencode(
        {"path": "camera1", "start": rfc3339(start), "end": rfc3339(end + timedelta(minutes=5))}
    )
    assert (await _hook(service, _mediamtx_body(inside, token=token)))[0] == 200
    assert (await _hook(service, _mediamtx_body(past, token=token)))[0] == 401
    assert (await _hook(service, _mediamtx_body("path=camera1", token=token)))[0] == 401


def _refusals(client: Client, footage: Footage, answer: dict[str, Any]) -> dict[str, Any]:
    start, end = _window(footage)
    good = urlencode({"path": "camera1", "start": rfc3339(start), "duration": "40"})
    token = _media_token(client, start, end)
    return {
        "no token": _mediamtx_body(good),
        "expired": _mediamtx_body(
            good, token=_media_token(client, start, end, exp=int(time.time()) - 5)
        ),
        "earlier start": _mediamtx_body(
            urlencode(
                {
                    "path": "camera1",
                    "start": rfc3339(start - timedelta(seconds=5)),
                    "duration": "40",
                }
            ),
            token=token,
        ),
        "longer": _mediamtx_body(good.replace("duration=40", "duration=41"), token=token),
        "other path": _mediamtx_body(good, token=token, path="camera2"),
        "publish": _mediamtx_body(good, token=token, action="publish"),
        "read": _mediamtx_body(good, token=token, action="read"),
        "user token": _mediamtx_body(good, token=answer["access_token"]),
        "tampered": _mediamtx_body(good, token=token[:-4] + "AAAA"),
        "not an object": ["token", token],
        "number fields": {"token": 1, "action": 2, "path": 3, "query": 4},
    }


@pytest.mark.parametrize(
    "case",
    [
        "no token",
        "expired",
        "earlier start",
        "longer",
        "other path",
        "publish",
        "read",
        "user token",
        "tampered",
        "not an object",
        "number fields",
    ],
)
async def test_the_hook_refuses_what_the_token_does_not_grant(
    service: Client, footage: Footage, case: str
) -> None:
    """Every refusal is 401 in the API's shape."""
    body = _refusals(service, footage, await login(service))[case]
    assert await _hook(service, body) == (401, {"message": "Unauthenticated."})


async def test_the_hook_refuses_a_body_that_is_not_json(service: Client) -> None:
    """Garbage and deep nesting are 401, never a 500."""
    for data in (b"\xff\xfe", b"{", b"[" * 3000):
        response = await service.post(HOOK, data=data, headers={"Content-Type": "application/json"})
        assert response.status == 401


async def test_the_hook_refuses_a_huge_body(service: Client) -> None:
    """A body over 64 KiB is 413."""
    response = await service.post(HOOK, json=_mediamtx_body("a" * 70_000))
    assert response.status == 413
