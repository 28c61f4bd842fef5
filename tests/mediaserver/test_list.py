"""GET /list: continuous spans of recording, as MediaMTX's playback server lists them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.media import CAMERA, TokenFactory, at, rfc3339, segment
from tests.support.service import Client
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.mediaserver.synthetic import write_mvhd_duration


async def test_lists_spans_merging_small_gaps(client: Client, token: TokenFactory) -> None:
    """Segments within 1 s of each other form one span; a longer gap starts a new one."""
    response = await client.get("/list", params={"path": CAMERA, "jwt": token()})
    assert response.status == 200
    assert response.content_type == "application/json"
    entries = await response.json()
    assert [(e["start"], e["duration"]) for e in entries] == [
        ("2026-11-23T10:00:00Z", 30.5),
        ("2026-11-23T10:00:40Z", 10),
    ]
    url = urlsplit(entries[0]["url"])
    assert url.path == "/get"
    assert url.query.startswith("duration=30.5&path=cam1&start=2026-11-23T10%3A00%3A00Z")
    assert parse_qs(url.query) == {
        "duration": ["30.5"],
        "path": [CAMERA],
        "start": ["2026-11-23T10:00:00Z"],
    }


async def test_start_and_end_trim_the_spans(client: Client, token: TokenFactory) -> None:
    """`start` and `end` cut the first and last span, as MediaMTX's trimEntries does."""
    params = {"path": CAMERA, "jwt": token(), "start": rfc3339(at(5.25)), "end": rfc3339(at(45))}
    entries = await (await client.get("/list", params=params)).json()
    assert [(e["start"], e["duration"]) for e in entries] == [
        ("2026-11-23T10:00:05.25Z", 25.25),
        ("2026-11-23T10:00:40Z", 5),
    ]


async def test_start_in_a_gap_lists_what_follows(client: Client, token: TokenFactory) -> None:
    """A start inside a gap drops the span before it."""
    params = {"path": CAMERA, "jwt": token(), "start": rfc3339(at(35))}
    entries = await (await client.get("/list", params=params)).json()
    assert [(e["start"], e["duration"]) for e in entries] == [("2026-11-23T10:00:40Z", 10)]


async def test_offsets_are_read_as_rfc3339(client: Client, token: TokenFactory) -> None:
    """A start with a zone offset means the same instant as in UTC."""
    params = {"path": CAMERA, "jwt": token(), "start": "2026-11-23T13:00:40+03:00"}
    entries = await (await client.get("/list", params=params)).json()
    assert entries[0]["start"] == "2026-11-23T10:00:40Z"


@pytest.mark.parametrize(
    "params",
    [
        {"path": CAMERA, "start": rfc3339(at(60))},
        {"path": CAMERA, "end": rfc3339(at(-60))},
        {"path": "nobody"},
    ],
    ids=["after-all-footage", "before-all-footage", "unknown-path"],
)
async def test_nothing_there_is_404(
    client: Client, token: TokenFactory, params: dict[str, str]
) -> None:
    """No footage in the range, or no such path, is MediaMTX's 404."""
    response = await client.get("/list", params={**params, "jwt": token(params["path"])})
    assert response.status == 404
    assert await response.json() == {"status": "error", "error": "no recording segments found"}


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"start": "yesterday"}, "invalid start"),
        ({"start": "2026-11-23 10:00:00"}, "invalid start"),
        ({"start": "2026-13-23T10:00:00Z"}, "invalid start"),
        ({"end": "2026-11-23T10:00:00"}, "invalid end"),
    ],
)
async def test_bad_times_are_400(
    client: Client, token: TokenFactory, params: dict[str, str], text: str
) -> None:
    """Times that are not RFC 3339 are refused with MediaMTX's error shape."""
    response = await client.get("/list", params={"path": CAMERA, "jwt": token(), **params})
    assert response.status == 400
    body = await response.json()
    assert body["status"] == "error"
    assert body["error"].startswith(text)


@pytest.mark.parametrize(
    "query",
    [
        "path=",
        "",
        "path=../cam1",
        "path=cam1/../../etc",
        "path=/etc",
        "path=%2e%2e%2fcam1",
        "path=%2Fetc%2Fpasswd",
        "path=cam1%00",
        "path=cam%201",
        "path=cam1/",
        "path=.",
    ],
)
async def test_bad_paths_are_400(client: Client, token: TokenFactory, query: str) -> None:
    """Empty, absolute, dotted or odd path names never reach the file system."""
    response = await client.get(f"/list?{query}&jwt={token('')}")
    assert response.status == 400
    assert (await response.json())["error"].startswith("invalid path name")


async def test_public_url_is_used_in_links(
    aiohttp_client: Any, library: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """With a public URL configured, the links point there rather than at the Host header."""
    app = create_media_app(library, StaticKeys(jwks), public_url="https://media.example/")
    client = await aiohttp_client(app)
    entries = await (
        await client.get("/list", params={"path": "cam2", "jwt": token("cam2")})
    ).json()
    assert entries[0]["url"].startswith("https://media.example/get?duration=10&path=cam2&start=")


async def test_damaged_segment_is_skipped_and_logged(
    aiohttp_client: Any,
    tmp_path: Path,
    jwks: dict[str, Any],
    token: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A garbage file among good segments is left out of the list and logged."""
    segment(tmp_path, CAMERA, 0, 4)
    (tmp_path / CAMERA / "2026-11-23_10-00-04-000000.mp4").write_bytes(b"\x00\x00\x00\x08junk" * 50)
    segment(tmp_path, CAMERA, 4.5, 4)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    with caplog.at_level(logging.WARNING, logger="vms.mediaserver"):
        entries = await (await client.get("/list", params={"path": CAMERA, "jwt": token()})).json()
    assert [(e["start"], e["duration"]) for e in entries] == [("2026-11-23T10:00:00Z", 8.5)]
    assert "2026-11-23_10-00-04-000000.mp4" in caplog.text


async def test_segment_being_written_counts_complete_fragments_only(
    aiohttp_client: Any, tmp_path: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """A segment cut in the middle of a fragment lists only its complete fragments."""
    written = segment(tmp_path, "src", 0, 6)
    growing = tmp_path / CAMERA / written.name
    growing.parent.mkdir()
    data = written.read_bytes()
    # 6 s at a 2 s GOP is three fragments; cut the file half-way into the third.
    third = data.rfind(b"moof") - 4
    growing.write_bytes(data[: third + (len(data) - third) // 2])
    with growing.open("r+b") as file:  # still open: the recorder has not filled in mvhd yet
        write_mvhd_duration(file.fileno(), data.find(b"mvhd") - 4, 0)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    entries = await (await client.get("/list", params={"path": CAMERA, "jwt": token()})).json()
    assert [(e["start"], e["duration"]) for e in entries] == [("2026-11-23T10:00:00Z", 4)]
    shutil.rmtree(tmp_path / "src")


async def test_preflight_answers_like_mediamtx(client: Client) -> None:
    """A CORS preflight gets 204 with the methods and headers MediaMTX allows."""
    response = await client.options(
        "/list", headers={"Access-Control-Request-Method": "GET", "Origin": "http://x"}
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Methods"] == "OPTIONS, GET"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_unknown_route_has_the_error_shape(client: Client) -> None:
    """Anything else is gin's plain 404, as MediaMTX answers it."""
    response = await client.get("/nothing")
    assert response.status == 404
    assert await response.text() == "404 page not found"
