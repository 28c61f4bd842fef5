"""Each surface answers every unknown path and method in its own shape, and says what it knows.

Also: an unexpected error keeps its traceback in the log (redacted), a download's effective
status is the same everywhere, and a page of the list costs one query.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from tests.support.service import Client, Footage, bearer, login, rfc3339, wait_status
from vms import appkeys
from vms.logs import RedactingFormatter

JSON_SURFACES = [
    ("GET", "/api/nowhere", 404, "Not Found."),
    ("GET", "/api", 404, "Not Found."),
    ("PUT", "/api/v1/downloads", 405, "Method Not Allowed."),
    ("DELETE", "/api/v1/token", 405, "Method Not Allowed."),
    ("GET", "/archive/download/1/x", 404, "Not Found."),
    ("POST", "/archive/download/1", 405, "Method Not Allowed."),
    ("GET", "/archive/nowhere", 404, "Not Found."),
    ("GET", "/.well-known/nope", 404, "Not Found."),
    ("POST", "/.well-known/jwks.json", 405, "Method Not Allowed."),
    ("GET", "/ws/nope", 404, "Not Found."),
    ("GET", "/ws/app", 404, "Not Found."),
    ("GET", "/broadcasting/nope", 404, "Not Found."),
    ("GET", "/broadcasting/auth", 405, "Method Not Allowed."),
]


@pytest.mark.parametrize(("method", "path", "status", "message"), JSON_SURFACES)
async def test_json_surfaces_answer_unknown_paths_in_laravel_json(
    service: Client, method: str, path: str, status: int, message: str
) -> None:
    """The API, files, push, broadcasting and well-known prefixes never answer plain text."""
    response = await service.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    assert await response.json() == {"message": message}
    if status == 405:
        assert response.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("POST", "/history", 405), ("GET", "/apix", 404)],
)
async def test_the_page_surface_answers_in_html(
    service: Client, method: str, path: str, status: int
) -> None:
    """Paths outside every JSON prefix are the pages' and get the HTML error page."""
    response = await service.request(method, path)
    assert response.status == status
    assert response.content_type == "text/html"
    assert "Content-Security-Policy" in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("POST", "/list", 404), ("PUT", "/get", 404)],
)
async def test_the_media_server_answers_in_mediamtx_json(
    media_server: str, method: str, path: str, status: int
) -> None:
    """The embedded media server's unknown paths and methods get gin's 404, as MediaMTX's do."""
    async with aiohttp.ClientSession() as http, http.request(method, media_server + path) as r:
        assert r.status == status
        assert r.headers["Server"] == "mediamtx"
        assert await r.text() == "404 page not found"


async def test_an_unexpected_error_is_logged_once_with_its_traceback_redacted(
    service: Client,
    footage: Footage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a handler is a 500 for the client and a whole, redacted traceback in the log."""
    answer = await login(service)
    secret = answer["access_token"]
    start = footage.start + timedelta(seconds=10)
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=30))},
        headers=bearer(answer),
    )
    assert response.status == 200

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError(f"lookup of {secret} went wrong")

    monkeypatch.setattr(service.app[appkeys.RESOURCES], "download", broken)
    with caplog.at_level(logging.ERROR):
        response = await service.get("/api/v1/downloads", headers=bearer(answer))
    assert response.status == 500
    assert await response.json() == {"message": "Server Error."}
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = RedactingFormatter("%(message)s").format(record)
    assert "Traceback (most recent call last)" in text
    assert "in broken" in text and "KeyError" in text
    assert secret not in text and "[redacted]" in text


async def _archive(service: Client, footage: Footage) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = await login(service, device="phone", x_client="ios-cctv")
    start = footage.start + timedelta(seconds=30)
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
        headers=bearer(answer, "phone", "ios-cctv"),
    )
    assert response.status == 202
    download = (await response.json())["download"]
    ready = await wait_status(service, answer, download["id"], {"ready"}, device="phone")
    return answer, ready


async def test_a_ready_archive_whose_file_is_gone_reads_expired_at_once(
    service: Client, footage: Footage
) -> None:
    """No cleanup has run yet: the API already says expired, with no URL, as the page does."""
    answer, ready = await _archive(service, footage)
    assert ready["url"] and ready["is_file_exists"]
    service.app[appkeys.FILES].path(ready["id"]).unlink()
    response = await service.get(
        f"/api/v1/downloads/{ready['id']}", headers=bearer(answer, "phone", "ios-cctv")
    )
    data = (await response.json())["data"]
    assert (data["status"], data["url"], data["is_file_exists"]) == ("expired", None, False)
    download = await service.app[appkeys.DB].download(ready["id"])
    assert download is not None
    row = service.app[appkeys.RESOURCES].facts(download)
    assert row.status == "expired"  # the page and push read the same facts


async def test_a_page_of_the_download_list_is_one_query(service: Client, footage: Footage) -> None:
    """25 history records (links) cost one SELECT on downloads, not one per row."""
    answer = await login(service)
    start = footage.start + timedelta(seconds=10)
    for index in range(26):
        moment = start + timedelta(seconds=index)
        response = await service.get(
            "/api/v1/cameras/1/archive/link",
            params={"from": rfc3339(moment), "to": rfc3339(moment + timedelta(seconds=30))},
            headers=bearer(answer),
        )
        assert response.status == 200
    statements: list[str] = []
    db = service.app[appkeys.DB]
    await db.set_trace_callback(statements.append)
    response = await service.get("/api/v1/downloads", headers=bearer(answer))
    await db.set_trace_callback(None)
    body = await response.json()
    assert len(body["data"]) == 25 and body["meta"]["total"] == 26
    assert all(row["url"] for row in body["data"])  # each link still carries a fresh URL
    reads = [s for s in statements if "downloads" in s]
    assert len(reads) == 1, reads
