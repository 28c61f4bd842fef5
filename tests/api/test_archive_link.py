"""The seed endpoint for `thick-legal`: validation, cameras, footage, time zones and a real link."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import av
import jwt
import pytest
from multidict import MultiDict

from tests.support.service import Client, Footage, bearer, login, rfc3339
from vms import appkeys
from vms.app import create_app
from vms.config import Config, load_config

ClientFactory = Callable[..., Awaitable[Client]]

GOP_SECONDS = 2.0  # the test recordings have a keyframe every 2 s
NOT_FOUND = {"message": "Camera not found."}
NO_RECORDING = "No recording found between from and to."
REQUIRED = "The {} field is required."
INVALID = "The {} field must be a valid date."
AFTER = "The to field must be a date after from."


def _local(moment: datetime, tz: str = "UTC") -> str:
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _window(footage: Footage, offset: float = 30, seconds: float = 60) -> tuple[datetime, datetime]:
    start = footage.start + timedelta(seconds=offset)
    return start, start + timedelta(seconds=seconds)


def _query(footage: Footage, offset: float = 30, seconds: float = 60) -> dict[str, str]:
    start, end = _window(footage, offset, seconds)
    return {"from": rfc3339(start), "to": rfc3339(end)}


async def _link(
    client: Client,
    headers: dict[str, str],
    params: Any = None,
    *,
    camera: str | int = 1,
    **kwargs: Any,
) -> tuple[int, Any]:
    response = await client.get(
        f"/api/v1/cameras/{camera}/archive/link", params=params, headers=headers, **kwargs
    )
    text = await response.text()
    assert "Traceback" not in text
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


def _link_params(link: str) -> dict[str, str]:
    query = parse_qs(urlsplit(link).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in query.values()), query
    return {k: v[0] for k, v in query.items()}


def _summary(errors: dict[str, list[str]]) -> str:
    messages = [m for field in errors.values() for m in field]
    more = len(messages) - 1
    if more <= 0:
        return messages[0]
    return f"{messages[0]} (and {more} more error{'s' if more > 1 else ''})"


def _probe(path: Path) -> tuple[float, int, str]:
    """Duration in seconds, decoded frame count and codec of an MP4 file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(container.duration) / 1_000_000 if container.duration else 0.0
        frames = sum(1 for _ in container.decode(stream))
        return duration, frames, stream.codec_context.name


async def test_thick_client_gets_a_playable_link_and_a_history_record(
    service: Client, footage: Footage, media_server: str, tmp_path: Path
) -> None:
    """thick-legal gets 200 {"link"}; the link plays as an MP4 of the range and is recorded."""
    answer = await login(service)
    start, end = _window(footage, 30, 60)
    status, body = await _link(service, bearer(answer), _query(footage, 30, 60))
    assert status == 200, body
    assert set(body) == {"link"}
    link = body["link"]
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == media_server
    assert parts.path == "/get"
    params = _link_params(link)
    assert set(params) == {"path", "start", "duration", "format", "jwt"}
    assert params["path"] == "camera1"
    assert params["start"] == rfc3339(start)
    assert float(params["duration"]) == 60
    assert params["format"] == "mp4"

    async with aiohttp.ClientSession() as http, http.get(link) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "video/mp4"
        data = await response.read()
    video = tmp_path / "link.mp4"
    video.write_bytes(data)
    duration, frames, codec = await asyncio.to_thread(_probe, video)
    assert codec == "h264"
    assert abs(duration - 60) <= GOP_SECONDS + 0.5, duration
    assert frames >= 5 * (60 - GOP_SECONDS)  # 5 fps recordings

    response = await service.get("/api/v1/downloads", headers=bearer(answer))
    records = (await response.json())["data"]
    assert len(records) == 1
    record = records[0]
    assert record["camera_id"] == 1
    assert record["user_id"] == answer["user"]["id"]
    assert (record["from"], record["to"]) == (_local(start), _local(end))
    assert record["type"] == "mp4"
    # A range across midnight spells out the end's date too (footage is made minutes ago).
    end_text = f"{end:%H-%M-%S}" if end.date() == start.date() else f"{end:%Y-%m-%d %H-%M-%S}"
    assert record["name"] == f"Gate, {start:%Y-%m-%d %H-%M-%S} - {end_text}.mp4"


async def test_link_token_is_a_short_lived_media_token_for_that_camera_only(
    service: Client, footage: Footage
) -> None:
    """The link's jwt verifies with the JWKS: aud media-server, short exp, camera1 playback only."""
    answer = await login(service)
    before = int(time.time())
    status, body = await _link(service, bearer(answer), _query(footage))
    assert status == 200, body
    token = _link_params(body["link"])["jwt"]
    jwks = await (await service.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(key), algorithms=["EdDSA"], audience="media-server")
    assert claims["aud"] == "media-server"
    assert claims["mediamtx_permissions"] == [{"action": "playback", "path": "camera1"}]
    assert before < claims["exp"] <= before + 3600
    # The same token does not open another camera on the media server.
    other = body["link"].replace("path=camera1", "path=camera2")
    async with aiohttp.ClientSession() as http, http.get(other) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    ("spelling", "shift"),
    [
        ("{utc:%Y-%m-%dT%H:%M:%S}Z", 0.0),
        ("{utc:%Y-%m-%dt%H:%M:%S}z", 0.0),
        ("{utc:%Y-%m-%dT%H:%M:%S}.000Z", 0.0),
        ("{utc:%Y-%m-%dT%H:%M:%S}.000000000Z", 0.0),
        ("{utc:%Y-%m-%dT%H:%M:%S}.5Z", 0.5),
        ("{utc:%Y-%m-%dT%H:%M:%S}.25+00:00", 0.25),
        ("{plus3:%Y-%m-%dT%H:%M:%S}+03:00", 0.0),
        ("{minus530:%Y-%m-%dT%H:%M:%S}-05:30", 0.0),
        ("{utc:%Y-%m-%d %H:%M:%S}", 0.0),
    ],
)
async def test_valid_date_spellings_mean_the_same_instant(
    service: Client, footage: Footage, spelling: str, shift: float
) -> None:
    """RFC 3339 (any offset, fractions) and `YYYY-MM-DD HH:MM:SS` (UTC) all mean one instant."""
    answer = await login(service)
    start, end = _window(footage)
    text = spelling.format(
        utc=start,
        plus3=start.astimezone(ZoneInfo("Etc/GMT-3")),
        minus530=start - timedelta(hours=5, minutes=30),
    )
    status, body = await _link(service, bearer(answer), {"from": text, "to": rfc3339(end)})
    assert status == 200, body
    params = _link_params(body["link"])
    expected = start + timedelta(seconds=shift)
    assert datetime.fromisoformat(params["start"].replace("Z", "+00:00")) == expected
    assert float(params["duration"]) == pytest.approx(60 - shift)


BAD_DATES = [
    "2026-13-01 00:00:00",
    "2026-02-30 10:00:00",
    "2026-11-23 24:00:00",
    "2026-11-23T10:20:60Z",
    "yesterday",
    "now",
    "1700000000",
    "1700000000.5",
    "２０２６-１１-２３ １０:２０:００",
    "٢٠٢٦-١١-٢٣ ١٠:٢٠:٠٠",
    "٢٠٢٦-11-23 10:20:00",
    "２０26-11-23 10:20:00",
    "2026-11-23T10:20:00",
    "2026-11-23 10:20",
    "2026-11-23",
    "23.11.2026 10:20:00",
    "2026-11-23T10:20:00+0300",
    "2026-11-23T10:20:00+24:00",
    "2026-11-23T10:20:00 Z",
    "2026-11-23T10:20:00.Z",
    "2026-11-23T10:20:00.1234567890Z",
    "2026-11-23 10:20:00+03:00",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2026-11-23T10:20:00Z; DROP TABLE downloads",
    "\x00",
    "x" * 4000,
]


@pytest.mark.parametrize("bad", BAD_DATES, ids=[repr(b[:30]) for b in BAD_DATES])
async def test_invalid_from_is_422_valid_date(service: Client, footage: Footage, bad: str) -> None:
    """Anything but RFC 3339 or `YYYY-MM-DD HH:MM:SS` in from: 422 `… must be a valid date.`"""
    answer = await login(service)
    status, body = await _link(service, bearer(answer), {**_query(footage), "from": bad})
    assert status == 422, body
    assert body == {"message": INVALID.format("from"), "errors": {"from": [INVALID.format("from")]}}


@pytest.mark.parametrize(
    "bad", ["yesterday", "2026-11-23T10:20:00", "1700000000", "2026-13-01 00:00:00"]
)
async def test_invalid_to_is_422_valid_date(service: Client, footage: Footage, bad: str) -> None:
    """An invalid to: 422 `The to field must be a valid date.` and nothing about from."""
    answer = await login(service)
    status, body = await _link(service, bearer(answer), {**_query(footage), "to": bad})
    assert status == 422, body
    assert body == {"message": INVALID.format("to"), "errors": {"to": [INVALID.format("to")]}}


async def test_huge_date_is_422_valid_date(service: Client, footage: Footage) -> None:
    """A 100 KB from is an invalid date like any other: 422 in the Laravel shape."""
    answer = await login(service)
    status, body = await _link(service, bearer(answer), {**_query(footage), "from": "9" * 100_000})
    assert status == 422, str(body)[:300]
    assert body["errors"] == {"from": [INVALID.format("from")]}


@pytest.mark.parametrize(
    ("drop", "blank", "errors"),
    [
        (("from",), None, {"from": [REQUIRED.format("from")]}),
        (("to",), None, {"to": [REQUIRED.format("to")]}),
        (("from", "to"), None, {"from": [REQUIRED.format("from")], "to": [REQUIRED.format("to")]}),
        ((), ("from", ""), {"from": [REQUIRED.format("from")]}),
        ((), ("from", "   "), {"from": [REQUIRED.format("from")]}),
        ((), ("to", ""), {"to": [REQUIRED.format("to")]}),
        ((), ("to", " \t "), {"to": [REQUIRED.format("to")]}),
    ],
)
async def test_missing_or_blank_dates_are_required(
    service: Client,
    footage: Footage,
    drop: tuple[str, ...],
    blank: tuple[str, str] | None,
    errors: dict[str, list[str]],
) -> None:
    """Missing, empty or whitespace from/to: 422 `The … field is required.` with the summary."""
    answer = await login(service)
    params = {k: v for k, v in _query(footage).items() if k not in drop}
    if blank:
        params[blank[0]] = blank[1]
    status, body = await _link(service, bearer(answer), params)
    assert status == 422, body
    assert body == {"message": _summary(errors), "errors": errors}


@pytest.mark.parametrize("name", ["from", "to"])
async def test_repeated_query_parameter_is_422(
    service: Client, footage: Footage, name: str
) -> None:
    """`from=A&from=A` is not one date: 422 on that field."""
    answer = await login(service)
    query = _query(footage)
    params = MultiDict(query)
    params.add(name, query[name])
    status, body = await _link(service, bearer(answer), params)
    assert status == 422, body
    assert list(body["errors"]) == [name]


@pytest.mark.parametrize("seconds", [-60, -1, 0])
async def test_to_not_after_from_is_422(service: Client, footage: Footage, seconds: int) -> None:
    """to before or equal to from: 422 `The to field must be a date after from.`"""
    answer = await login(service)
    start, _ = _window(footage, 120)
    params = {"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=seconds))}
    status, body = await _link(service, bearer(answer), params)
    assert status == 422, body
    assert body == {"message": AFTER, "errors": {"to": [AFTER]}}


async def test_range_over_the_maximum_is_422_and_the_maximum_itself_is_fine(
    service: Client, footage: Footage
) -> None:
    """to - from = 3 h is allowed; 3 h + 1 s is 422 on to."""
    answer = await login(service)
    end = footage.start + timedelta(seconds=90)
    ok = {"from": rfc3339(end - timedelta(hours=3)), "to": rfc3339(end)}
    status, body = await _link(service, bearer(answer), ok)
    assert status == 200, body
    too_long = {"from": rfc3339(end - timedelta(hours=3, seconds=1)), "to": rfc3339(end)}
    status, body = await _link(service, bearer(answer), too_long)
    assert status == 422, body
    assert list(body["errors"]) == ["to"]
    assert body["errors"]["to"][0].startswith("The to field must be")


async def test_configured_maximum_range_applies(
    service: Client, config: Config, footage: Footage, aiohttp_client: ClientFactory
) -> None:
    """With VMS_MAX_RANGE=2m a three-minute range is 422 on to and a two-minute one is 200."""
    max_range = load_config(None, environ={"VMS_MAX_RANGE": "2m"}).max_range
    client = await aiohttp_client(create_app(dataclasses.replace(config, max_range=max_range)))
    answer = await login(client)
    status, body = await _link(client, bearer(answer), _query(footage, 30, 180))
    assert status == 422, body
    assert list(body["errors"]) == ["to"]
    status, body = await _link(client, bearer(answer), _query(footage, 30, 120))
    assert status == 200, body


async def test_from_in_the_future_is_422(service: Client) -> None:
    """A range that starts after now is 422 on from (and on to, which is later still)."""
    answer = await login(service)
    start = datetime.now(UTC) + timedelta(hours=1)
    params = {"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=5))}
    status, body = await _link(service, bearer(answer), params)
    assert status == 422, body
    assert body["errors"] == {
        "from": ["The from field must be a date before or equal to now."],
        "to": ["The to field must be a date before or equal to now."],
    }
    assert body["message"].startswith("The from field")


@pytest.mark.parametrize(
    ("drop", "replace", "key", "message"),
    [
        ("X-Client", None, "X-Client", "The X-Client field is required."),
        ("X-UUID", None, "X-UUID", "The X-UUID field is required."),
        (None, ("X-Client", "desktop"), "X-Client", None),
        (None, ("X-Client", ""), "X-Client", "The X-Client field is required."),
    ],
)
async def test_device_header_problems_with_a_valid_token_are_422(
    service: Client,
    footage: Footage,
    drop: str | None,
    replace: tuple[str, str] | None,
    key: str,
    message: str | None,
) -> None:
    """With an accepted token, a missing/unknown X-Client or missing X-UUID is 422 on that key."""
    answer = await login(service)
    headers = bearer(answer)
    if drop:
        del headers[drop]
    if replace:
        headers[replace[0]] = replace[1]
    status, body = await _link(service, headers, _query(footage))
    assert status == 422, body
    assert list(body["errors"]) == [key]
    if message:
        assert body["errors"][key] == [message]


async def test_all_errors_are_reported_together(service: Client) -> None:
    """Bad from, missing to and missing X-Client come back in one 422 with `(and 2 more errors)`."""
    answer = await login(service)
    headers = bearer(answer)
    del headers["X-Client"]
    status, body = await _link(service, headers, {"from": "yesterday"})
    assert status == 422, body
    assert set(body["errors"]) == {"from", "to", "X-Client"}
    assert body["message"] == f"{INVALID.format('from')} (and 2 more errors)"


@pytest.mark.parametrize(
    "camera",
    [
        "2",
        "3",
        "999",
        "0",
        "-1",
        "abc",
        "1.5",
        "1e0",
        "%EF%BC%91",
        "%C2%B9",
        "1%20",
        "99999999999999999999",
    ],
)
async def test_unknown_or_forbidden_camera_is_404(
    service: Client, footage: Footage, camera: str
) -> None:
    """Another user's, nobody's, a missing or a non-numeric camera: 404 Camera not found."""
    answer = await login(service, "alice")
    response = await service.get(
        f"/api/v1/cameras/{camera}/archive/link", params=_query(footage), headers=bearer(answer)
    )
    assert response.status == 404
    assert await response.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("user", "camera", "status"),
    [("alice", 1, 200), ("bob", 2, 200), ("bob", 1, 404), ("admin", 1, 200), ("admin", 2, 200)],
)
async def test_grants_decide_who_sees_which_camera(
    service: Client, footage: Footage, user: str, camera: int, status: int
) -> None:
    """Users see their granted cameras only; the operator sees every camera."""
    answer = await login(service, user)
    got, body = await _link(service, bearer(answer), _query(footage, 10, 60), camera=camera)
    assert got == status, body
    if status == 404:
        assert body == NOT_FOUND


async def test_operator_sees_an_ungranted_camera(service: Client, footage: Footage) -> None:
    """Camera 3 (granted to nobody, no footage) is the operator's too: 422 no recording, not 404."""
    answer = await login(service, "admin")
    status, body = await _link(service, bearer(answer), _query(footage), camera=3)
    assert status == 422, body
    assert body["errors"] == {"from": [NO_RECORDING]}


@pytest.mark.parametrize(
    ("user", "camera", "offset", "seconds"),
    [
        ("alice", 1, -20 * 60, 10 * 60),  # before the recordings
        ("alice", 1, -60, 60),  # ends exactly where the recordings start
        ("alice", 1, 6 * 60 + 5, 40),  # after the recordings, still in the past
        ("bob", 2, 3 * 60 + 10, 40),  # inside camera 2's one-minute gap
    ],
    ids=["before", "touching-start", "after", "in-gap"],
)
async def test_range_without_footage_is_422_on_from(
    service: Client, footage: Footage, user: str, camera: int, offset: float, seconds: float
) -> None:
    """A range with no recording: 422 {"from": ["No recording found between from and to."]}."""
    answer = await login(service, user)
    status, body = await _link(
        service, bearer(answer), _query(footage, offset, seconds), camera=camera
    )
    assert status == 422, body
    assert body == {"message": NO_RECORDING, "errors": {"from": [NO_RECORDING]}}


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:01Z"),
        ("0999-12-31 23:59:00", "1000-01-01 00:00:00"),
        ("1969-12-31T23:59:59Z", "1970-01-01T00:00:01Z"),
    ],
)
async def test_ancient_valid_dates_have_no_footage(service: Client, start: str, end: str) -> None:
    """Valid dates long before any recording (year 1, 999, the epoch) are 422 no recording."""
    answer = await login(service)
    status, body = await _link(service, bearer(answer), {"from": start, "to": end})
    assert status == 422, body
    assert body == {"message": NO_RECORDING, "errors": {"from": [NO_RECORDING]}}


async def test_range_across_the_gap_has_footage(service: Client, footage: Footage) -> None:
    """A range that spans camera 2's gap but touches footage on either side is 200."""
    answer = await login(service, "bob")
    status, body = await _link(service, bearer(answer), _query(footage, 150, 120), camera=2)
    assert status == 200, body


async def test_dates_in_a_json_body(service: Client, footage: Footage) -> None:
    """from/to in a JSON body work when the query has none."""
    answer = await login(service)
    status, body = await _link(service, bearer(answer), json=_query(footage))
    assert status == 200, body
    assert _link_params(body["link"])["start"] == _query(footage)["from"]


async def test_dates_in_a_form_body(service: Client, footage: Footage) -> None:
    """from/to in a form body work when the query has none."""
    answer = await login(service)
    status, body = await _link(service, bearer(answer), data=_query(footage))
    assert status == 200, body


async def test_query_and_body_are_merged(service: Client, footage: Footage) -> None:
    """from in the query and to in the body make one request."""
    answer = await login(service)
    query = _query(footage)
    status, body = await _link(
        service, bearer(answer), {"from": query["from"]}, json={"to": query["to"]}
    )
    assert status == 200, body


async def test_query_wins_over_body(service: Client, footage: Footage) -> None:
    """With both, the query's values are used: a bad body is ignored, a bad query is not."""
    answer = await login(service)
    good = _query(footage)
    status, body = await _link(
        service, bearer(answer), good, json={"from": "garbage", "to": "garbage"}
    )
    assert status == 200, body
    assert _link_params(body["link"])["start"] == good["from"]
    status, body = await _link(service, bearer(answer), {"from": "yesterday"}, json=good)
    assert status == 422, body
    assert body["errors"] == {"from": [INVALID.format("from")]}


@pytest.mark.parametrize("value", [1700000000, None, ["2026-11-23 10:20:00"], {"a": 1}, True])
async def test_non_string_json_dates_are_422(service: Client, footage: Footage, value: Any) -> None:
    """A number, null, list, object or boolean as from in a JSON body is 422 on from."""
    answer = await login(service)
    body_in = {**_query(footage), "from": value}
    status, body = await _link(service, bearer(answer), json=body_in)
    assert status == 422, body
    assert list(body["errors"]) == ["from"]
    expected = REQUIRED.format("from") if value is None else INVALID.format("from")
    assert body["errors"]["from"] == [expected]


async def test_moscow_time_zone_reads_and_answers_local_time(
    service: Client, config: Config, footage: Footage, aiohttp_client: ClientFactory
) -> None:
    """With VMS_TIMEZONE=Europe/Moscow, `YYYY-MM-DD HH:MM:SS` is Moscow time and answers are too."""
    zone = load_config(None, environ={"VMS_TIMEZONE": "Europe/Moscow"}).timezone
    client = await aiohttp_client(create_app(dataclasses.replace(config, timezone=zone)))
    answer = await login(client)
    start, end = _window(footage)
    local = {"from": _local(start, zone), "to": _local(end, zone)}
    status, body = await _link(client, bearer(answer), local)
    assert status == 200, body
    assert _link_params(body["link"])["start"] == rfc3339(start)

    # RFC 3339 with an offset is absolute, whatever the server's zone.
    offset = {
        "from": start.astimezone(ZoneInfo("Etc/GMT-5")).strftime("%Y-%m-%dT%H:%M:%S+05:00"),
        "to": rfc3339(end),
    }
    status, body = await _link(client, bearer(answer), offset)
    assert status == 200, body
    assert _link_params(body["link"])["start"] == rfc3339(start)

    # The footage's UTC wall-clock time read as Moscow time is three hours earlier: no footage.
    utc_wall = {"from": _local(start), "to": _local(end)}
    status, body = await _link(client, bearer(answer), utc_wall)
    assert status == 422, body
    assert body["errors"] == {"from": [NO_RECORDING]}

    records = (await (await client.get("/api/v1/downloads", headers=bearer(answer))).json())["data"]
    assert len(records) == 2
    for record in records:
        assert (record["from"], record["to"]) == (local["from"], local["to"])
        assert record["name"].startswith(
            f"Gate, {start.astimezone(ZoneInfo(zone)):%Y-%m-%d %H-%M-%S}"
        )


async def test_media_server_down_is_a_clean_5xx(
    service: Client,
    footage: Footage,
    unused_tcp_port_factory: Callable[[], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A camera whose media server is not listening: a JSON 5xx with a message, no stack trace."""
    port = unused_tcp_port_factory()
    await service.app[appkeys.DB].put_camera(
        1, "Gate", "camera1", f"http://127.0.0.1:{port}", datetime.now(UTC)
    )
    answer = await login(service)
    caplog.set_level(logging.DEBUG)
    response = await service.get(
        "/api/v1/cameras/1/archive/link", params=_query(footage), headers=bearer(answer)
    )
    assert 500 <= response.status < 600
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"message"}
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in json.dumps(body)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Traceback" not in logged


async def test_other_clients_are_queued_and_leave_no_history(
    service: Client, footage: Footage
) -> None:
    """A mobile client gets 202 queued, and the history list (thick links only) stays empty."""
    answer = await login(service, device="phone", x_client="ios-cctv")
    headers = bearer(answer, "phone", "ios-cctv")
    status, body = await _link(service, headers, _query(footage))
    assert status == 202, body
    assert body["status"] == "queued"
    listing = await (await service.get("/api/v1/downloads", headers=headers)).json()
    assert listing["data"] == []


async def test_camera_in_url_is_quoted_safely(service: Client, footage: Footage) -> None:
    """A camera segment with path tricks is still just a missing camera."""
    answer = await login(service)
    for camera in ("..%2F1", quote("1/../1", safe=""), "1%00"):
        response = await service.get(
            f"/api/v1/cameras/{camera}/archive/link",
            params=_query(footage),
            headers=bearer(answer),
        )
        assert response.status == 404, camera
        assert await response.json() == NOT_FOUND
