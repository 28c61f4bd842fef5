"""Hostile input that once escaped as a 500: bytes that are not UTF-8, deep JSON, loose dates."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from tests.support.service import Client, Footage, bearer, login, rfc3339

DEVICE = "device-a"
DEEP = "[" * 3000


async def _raw(client: Client, request: bytes) -> tuple[int, dict[str, object]]:
    """Send `request` byte for byte and read the status and JSON body of the answer."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    return status, body


@pytest.mark.parametrize(
    "target",
    [
        "GET /api/v1/downloads",
        "GET /api/v1/downloads/1",
        "GET /api/v1/cameras/1/archive/link?from=2026-01-01T00:00:00Z&to=2026-01-01T00:01:00Z",
        "POST /api/v1/sessions/x",
        "POST /broadcasting/auth",
    ],
)
@pytest.mark.parametrize("token", [b"\xff", b"eyJ\xc3(.eyJ.sig", b"a.b.c\xed\xa0\x80"])
async def test_a_bearer_token_that_is_not_utf8_is_401(
    service: Client, target: str, token: bytes
) -> None:
    """`Authorization: Bearer <bytes that are not UTF-8>` is 401 Unauthenticated, never 500."""
    request = (
        (
            f"{target} HTTP/1.1\r\nHost: x\r\nX-Client: web\r\nX-UUID: {DEVICE}\r\n"
            "Content-Length: 0\r\nConnection: close\r\nAuthorization: Bearer "
        ).encode()
        + token
        + b"\r\n\r\n"
    )
    assert await _raw(service, request) == (401, {"message": "Unauthenticated."})


async def _nested(client: Client, method: str, path: str, headers: dict[str, str]) -> None:
    response = await client.request(
        method, path, data=DEEP, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status == 400, await response.text()
    assert await response.json() == {"message": "The request body is nested too deeply."}


async def test_deeply_nested_json_is_a_400_on_login(service: Client) -> None:
    """3,000 `[` posted to /api/v1/token, unauthenticated, is a 400 in Laravel's shape."""
    await _nested(service, "POST", "/api/v1/token", {"X-Client": "web", "X-UUID": DEVICE})


async def test_deeply_nested_json_is_a_400_on_bearer_endpoints(service: Client) -> None:
    """The link endpoint's body and broadcasting auth refuse deep JSON the same way."""
    answer = await login(service, device=DEVICE)
    headers = bearer(answer, DEVICE)
    await _nested(service, "GET", "/api/v1/cameras/1/archive/link", headers)
    await _nested(service, "POST", "/broadcasting/auth", headers)
    await _nested(service, "POST", "/api/v1/broadcasting/auth", headers)


async def test_json_within_the_depth_bound_is_read(service: Client) -> None:
    """Ordinary bodies, strings full of brackets included, still log in."""
    response = await service.post(
        "/api/v1/token",
        data=json.dumps({"login": "alice", "password": "[[[[{{{{" * 100, "x": [[[1]]]}),
        headers={"X-Client": "web", "X-UUID": DEVICE, "Content-Type": "application/json"},
    )
    assert response.status == 422  # read, and the password is wrong
    assert (await response.json())["errors"] == {
        "login": ["These credentials do not match our records."]
    }


@pytest.mark.parametrize("suffix", ["\n", " ", "\t", "\r\n"])
async def test_a_date_with_anything_after_it_is_invalid(
    service: Client, footage: Footage, suffix: str
) -> None:
    """`from=2024-01-01T10:00:00Z` followed by a newline (or a space) is not a valid date."""
    answer = await login(service, device=DEVICE)
    start = footage.start + timedelta(seconds=10)
    params = {"from": rfc3339(start) + suffix, "to": rfc3339(start + timedelta(minutes=1))}
    response = await service.get(
        "/api/v1/cameras/1/archive/link", params=params, headers=bearer(answer, DEVICE)
    )
    assert response.status == 422
    assert (await response.json())["errors"] == {"from": ["The from field must be a valid date."]}


@pytest.mark.parametrize("suffix", ["\n", " "])
async def test_a_local_date_with_anything_after_it_is_invalid(
    service: Client, footage: Footage, suffix: str
) -> None:
    """The `YYYY-MM-DD HH:MM:SS` spelling is exact too."""
    answer = await login(service, device=DEVICE)
    start = footage.start + timedelta(seconds=10)
    params = {
        "from": start.strftime("%Y-%m-%d %H:%M:%S") + suffix,
        "to": (start + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
    }
    response = await service.get(
        "/api/v1/cameras/1/archive/link", params=params, headers=bearer(answer, DEVICE)
    )
    assert response.status == 422
    assert (await response.json())["errors"] == {"from": ["The from field must be a valid date."]}
